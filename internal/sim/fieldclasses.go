package sim

// The field model's device classes (see field.go). Nothing here is derived
// from classes.go: other vendors, other paths, and processes rather than a
// Markov grammar.

// fcmd is one request of a field class. Sizes are log-normal: a median and a
// sigma (of the natural log); a zero median is a zero size.
type fcmd struct {
	name   string
	method string
	pre    string // before the device id ("" when the path has none)
	post   string
	arg    string // numeric query parameter ("" if none)
	status uint16
	inMed  float64
	inSig  float64
	outMed float64
	outSig float64
	// outUp multiplies outMed after the device's firmware update (0: unchanged):
	// the new firmware's config document is larger.
	outUp float64
	latMs float64 // median latency, ms (sigma 0.5)
}

// Process kinds.
const (
	procPeriodic = iota // every mean seconds (± jitter), or aligned to the wall clock
	procPoisson         // a non-homogeneous Poisson process (thinned by a daily profile)
	procSession         // sessions (open, a burst of requests, close) starting as a Poisson process
)

// Daily profiles (fieldProfile).
const (
	profFlat    = iota
	profHome    // people at home: morning and evening peaks of the country, some activity at night
	profDay     // the owner's own commands: the home profile, but none between 00:30 and 05:30 local
	profCommute // vehicles: rush hours of the country, little at night
)

// fproc is one traffic process of a class.
type fproc struct {
	cmd    uint8
	kind   uint8
	mean   float64 // s: the period, the mean gap at profile 1, or the mean gap between sessions
	jitter float64 // periodic: uniform relative jitter
	align  bool    // periodic: at wall-clock multiples of mean, plus a per-device offset (smart meters)
	prof   uint8
	mix    float64 // the share of the rate that follows the profile (the rest is flat)
	pair   int8    // poisson: a command that follows this one (relock after unlock), -1 for none
	// pairS is the range, in seconds, of the delay before pair.
	pairS [2]float64
	batch int // poisson: up to batch extra repeats a few seconds apart (an owner adjusting)
	// Sessions: open and close commands (-1 for none), the mean gap within a
	// session (exponential), and the session's duration (log-normal, seconds).
	open, close int8
	inGap       float64
	lenMed      float64
	lenSig      float64
	// quiet is a process that sends nothing while a session of the device is
	// open (a vehicle does not ping while it streams its track).
	quiet bool
	// newFw: the process exists only after the device's firmware update.
	newFw bool
}

// fclass is a device class of the field model.
type fclass struct {
	name, class, prefix string
	mqtt                bool
	idBy                string
	carrier             float64 // share of devices on a mobile carrier (CGNAT), 1 for vehicles
	fws                 []string
	newFw               string // what a rollout installs
	cmds                []fcmd
	procs               []fproc
	main                uint8 // the most frequent command (a flood repeats it, a clone and an exfiltration use it)
	fetch               int8  // a download the device makes (download growth uses it), -1 for none
	owner               int8  // the owner's daytime command (odd-hours attack uses it), -1 for none
	provision           []uint8
	rollout             []uint8 // manifest, download, report
	weight              int     // devices of this class per 20
	// pathDevices is the collection in the class's paths ("devices", "meters",
	// "vehicles"), for enumeration and reads; base is "/v2/<pathDevices>/"
	// (set in init; "" for MQTT).
	pathDevices string
	base        string
}

var fieldClasses = []*fclass{fThermostat, fCamera, fLock, fMeter, fVehicle}

const (
	ftState = iota
	ftConfig
	ftTarget
	ftActivate
	ftManifest
	ftDownload
	ftReport
	ftHealth
)

var fThermostat = &fclass{
	name: ClassThermostat, class: "thermostat/nestor-h2", prefix: "nest", idBy: idByAPIKey,
	fws: []string{"nestor/3.1.4", "nestor/3.1.4", "nestor/3.0.9"}, newFw: "nestor/3.2.0",
	cmds: []fcmd{
		ftState:    {name: "state", method: "POST", pre: "/v2/devices/", post: "/state", status: 204, inMed: 260, inSig: 0.3, latMs: 25},
		ftConfig:   {name: "config", method: "GET", pre: "/v2/devices/", post: "/config", status: 200, outMed: 900, outSig: 0.2, outUp: 2.6, latMs: 30},
		ftTarget:   {name: "target", method: "PUT", pre: "/v2/devices/", post: "/target", arg: "celsius", status: 200, inMed: 40, inSig: 0.2, outMed: 110, outSig: 0.2, latMs: 60},
		ftActivate: {name: "activate", method: "POST", pre: "/v2/devices/", post: "/activate", status: 201, inMed: 700, inSig: 0.2, outMed: 1500, outSig: 0.2, latMs: 120},
		ftManifest: {name: "manifest", method: "GET", pre: "/v2/devices/", post: "/firmware/manifest", status: 200, outMed: 420, outSig: 0.1, latMs: 40},
		ftDownload: {name: "image", method: "GET", post: "/v2/images/nestor-h2/3.2.0", status: 200, outMed: 2_400_000, outSig: 0.01, latMs: 2500},
		ftReport:   {name: "report", method: "POST", pre: "/v2/devices/", post: "/firmware/report", status: 204, inMed: 150, inSig: 0.2, latMs: 30},
		ftHealth:   {name: "health", method: "POST", pre: "/v2/devices/", post: "/health", status: 204, inMed: 900, inSig: 0.3, latMs: 30},
	},
	procs: []fproc{
		{cmd: ftState, kind: procPoisson, mean: 75, prof: profHome, mix: 0.4, pair: -1},
		{cmd: ftConfig, kind: procPeriodic, mean: 1800, jitter: 0.05, pair: -1},
		{cmd: ftTarget, kind: procPoisson, mean: 4 * 3600, prof: profDay, mix: 1, pair: -1, batch: 2},
		{cmd: ftHealth, kind: procPeriodic, mean: 600, jitter: 0.1, pair: -1, newFw: true},
	},
	main: ftState, fetch: ftConfig, owner: ftTarget,
	provision: []uint8{ftActivate, ftConfig},
	rollout:   []uint8{ftManifest, ftDownload, ftReport},
	weight:    5, pathDevices: "devices",
}

const (
	fcPing = iota
	fcMotion
	fcClip
	fcLive
	fcActivate
	fcSettings
)

var fCamera = &fclass{
	name: ClassCamera, class: "camera/lumen-c4", prefix: "lum", idBy: idByAPIKey,
	fws: []string{"lumen-fw/7.2", "lumen-fw/7.2", "lumen-fw/7.1"}, newFw: "lumen-fw/7.3",
	cmds: []fcmd{
		fcPing:     {name: "ping", method: "POST", pre: "/v2/devices/", post: "/ping", status: 204, inMed: 90, inSig: 0.1, latMs: 20},
		fcMotion:   {name: "motion", method: "POST", pre: "/v2/devices/", post: "/motion", status: 201, inMed: 500, inSig: 0.3, outMed: 80, outSig: 0.2, latMs: 30},
		fcClip:     {name: "clip", method: "POST", pre: "/v2/devices/", post: "/clips", status: 201, inMed: 1_800_000, inSig: 0.8, outMed: 120, outSig: 0.2, latMs: 900},
		fcLive:     {name: "live token", method: "GET", pre: "/v2/devices/", post: "/live-token", status: 200, outMed: 350, outSig: 0.1, latMs: 40},
		fcActivate: {name: "activate", method: "POST", pre: "/v2/devices/", post: "/activate", status: 201, inMed: 900, inSig: 0.2, outMed: 2000, outSig: 0.2, latMs: 120},
		fcSettings: {name: "settings", method: "GET", pre: "/v2/devices/", post: "/settings", status: 200, outMed: 1600, outSig: 0.3, latMs: 35},
	},
	procs: []fproc{
		{cmd: fcPing, kind: procPeriodic, mean: 60, jitter: 0.03, pair: -1},
		{cmd: fcClip, kind: procSession, mean: 25 * 60, prof: profHome, mix: 0.8, pair: -1,
			open: fcMotion, close: -1, inGap: 7, lenMed: 50, lenSig: 0.9},
		{cmd: fcLive, kind: procPoisson, mean: 5 * 3600, prof: profDay, mix: 1, pair: -1},
		{cmd: fcSettings, kind: procPeriodic, mean: 3600, jitter: 0.2, pair: -1},
	},
	main: fcPing, fetch: fcSettings, owner: fcLive,
	provision: []uint8{fcActivate, fcSettings},
	weight:    3, pathDevices: "devices",
}

const (
	flState = iota
	flUnlocked
	flLocked
	flBattery
	flHello
)

var fLock = &fclass{
	name: ClassSmartLock, class: "smart_lock/bolt-k2", prefix: "bolt", mqtt: true, idBy: idByMQTTClient,
	fws: []string{"bolt-2.8.0", "bolt-2.8.0", "bolt-2.7.5"}, newFw: "bolt-2.9.0",
	cmds: []fcmd{
		flState:    {name: "state", method: "PUBLISH", pre: "locks/", post: "/state", inMed: 70, inSig: 0.1, latMs: 5},
		flUnlocked: {name: "unlocked", method: "PUBLISH", pre: "locks/", post: "/unlocked", inMed: 60, inSig: 0.1, latMs: 5},
		flLocked:   {name: "locked", method: "PUBLISH", pre: "locks/", post: "/locked", inMed: 60, inSig: 0.1, latMs: 5},
		flBattery:  {name: "battery", method: "PUBLISH", pre: "locks/", post: "/battery", inMed: 40, inSig: 0.1, latMs: 5},
		flHello:    {name: "hello", method: "PUBLISH", pre: "locks/", post: "/hello", inMed: 300, inSig: 0.2, latMs: 5},
	},
	procs: []fproc{
		{cmd: flState, kind: procPeriodic, mean: 240, jitter: 0.15, pair: -1},
		{cmd: flUnlocked, kind: procPoisson, mean: 3 * 3600, prof: profDay, mix: 1, pair: flLocked, pairS: [2]float64{15, 240}},
		{cmd: flBattery, kind: procPeriodic, mean: 3600, jitter: 0.05, pair: -1},
	},
	main: flState, fetch: -1, owner: flUnlocked,
	provision: []uint8{flHello, flState},
	weight:    3, pathDevices: "",
}

const (
	fmReading = iota
	fmTariff
	fmActivate
)

var fMeter = &fclass{
	name: ClassMeter, class: "meter/ampere-e3", prefix: "amp", idBy: idByCertificate, carrier: 0.3,
	fws: []string{"ampere/1.9.2", "ampere/1.9.2", "ampere/1.8.7"}, newFw: "ampere/2.0.0",
	cmds: []fcmd{
		fmReading:  {name: "reading", method: "POST", pre: "/v2/meters/", post: "/readings", status: 202, inMed: 520, inSig: 0.15, latMs: 45},
		fmTariff:   {name: "tariff", method: "GET", pre: "/v2/meters/", post: "/tariff", status: 200, outMed: 2200, outSig: 0.1, latMs: 40},
		fmActivate: {name: "activate", method: "POST", pre: "/v2/meters/", post: "/activate", status: 201, inMed: 1200, inSig: 0.1, outMed: 900, outSig: 0.1, latMs: 150},
	},
	procs: []fproc{
		{cmd: fmReading, kind: procPeriodic, mean: 900, align: true, pair: -1},
		{cmd: fmTariff, kind: procPeriodic, mean: 4 * 3600, jitter: 0.3, pair: -1},
	},
	main: fmReading, fetch: fmTariff, owner: -1,
	provision: []uint8{fmActivate, fmTariff},
	weight:    5, pathDevices: "meters",
}

const (
	fvPing = iota
	fvTripStart
	fvTrack
	fvTripStop
	fvDoors
	fvActivate
	fvRoute
)

var fVehicle = &fclass{
	name: ClassVehicle, class: "vehicle/rover-t5", prefix: "rov", idBy: idByAPIKey, carrier: 1,
	fws: []string{"rover-os/11.4", "rover-os/11.4", "rover-os/11.2"}, newFw: "rover-os/12.0",
	cmds: []fcmd{
		fvPing:      {name: "ping", method: "POST", pre: "/v2/vehicles/", post: "/ping", status: 204, inMed: 150, inSig: 0.2, latMs: 90},
		fvTripStart: {name: "trip start", method: "POST", pre: "/v2/vehicles/", post: "/trip/start", status: 201, inMed: 300, inSig: 0.2, outMed: 90, outSig: 0.2, latMs: 90},
		fvTrack:     {name: "track", method: "POST", pre: "/v2/vehicles/", post: "/track", status: 204, inMed: 700, inSig: 0.4, latMs: 90},
		fvTripStop:  {name: "trip stop", method: "POST", pre: "/v2/vehicles/", post: "/trip/stop", status: 200, inMed: 350, inSig: 0.2, outMed: 90, outSig: 0.2, latMs: 90},
		fvDoors:     {name: "doors unlock", method: "POST", pre: "/v2/vehicles/", post: "/doors/unlock", status: 200, inMed: 60, inSig: 0.1, outMed: 70, outSig: 0.1, latMs: 300},
		fvActivate:  {name: "activate", method: "POST", pre: "/v2/vehicles/", post: "/activate", status: 201, inMed: 800, inSig: 0.2, outMed: 1800, outSig: 0.2, latMs: 200},
		fvRoute:     {name: "route", method: "GET", pre: "/v2/vehicles/", post: "/route", status: 200, outMed: 6000, outSig: 0.6, latMs: 120},
	},
	procs: []fproc{
		{cmd: fvPing, kind: procPoisson, mean: 900, prof: profFlat, pair: -1, quiet: true},
		{cmd: fvTrack, kind: procSession, mean: 3 * 3600, prof: profCommute, mix: 1, pair: -1,
			open: fvTripStart, close: fvTripStop, inGap: 20, lenMed: 25 * 60, lenSig: 0.7},
		{cmd: fvDoors, kind: procPoisson, mean: 6 * 3600, prof: profDay, mix: 1, pair: -1},
		{cmd: fvRoute, kind: procPoisson, mean: 2 * 3600, prof: profCommute, mix: 0.7, pair: -1},
	},
	main: fvPing, fetch: fvRoute, owner: fvDoors,
	provision: []uint8{fvActivate, fvPing},
	weight:    4, pathDevices: "vehicles",
}

// Requests only attacks make.
var (
	fAtkReset    = fcmd{name: "reset", method: "POST", pre: "/v2/devices/", post: "/reset", status: 202, inMed: 80, inSig: 0.1, outMed: 60, outSig: 0.1, latMs: 40}
	fAtkFwURL    = fcmd{name: "firmware url", method: "PUT", pre: "/v2/devices/", post: "/firmware/url", status: 200, inMed: 300, inSig: 0.2, outMed: 60, outSig: 0.1, latMs: 40}
	fAtkToken    = fcmd{name: "token", method: "POST", post: "/v2/auth/token", status: 401, inMed: 220, inSig: 0.2, outMed: 60, outSig: 0.1, latMs: 50}
	fAtkLocation = fcmd{name: "location", method: "GET", pre: "/v2/vehicles/", post: "/location", status: 403, outMed: 90, outSig: 0.1, latMs: 30}
	fAtkReads    = []fcmd{
		{name: "owner", method: "GET", pre: "/v2/devices/", post: "/owner", status: 200, outMed: 700, outSig: 0.3, latMs: 40},
		{name: "history", method: "GET", pre: "/v2/devices/", post: "/history", status: 200, outMed: 90_000, outSig: 1, latMs: 200},
		{name: "account devices", method: "GET", post: "/v2/account/devices", status: 200, outMed: 8000, outSig: 0.6, latMs: 90},
		{name: "wifi", method: "GET", pre: "/v2/devices/", post: "/network", status: 200, outMed: 400, outSig: 0.2, latMs: 40},
	}
)
