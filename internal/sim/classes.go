package sim

// Class names (the first part of the "class" field).
const (
	ClassThermostat = "thermostat"
	ClassCamera     = "camera"
	ClassSmartLock  = "smart_lock"
	ClassMeter      = "meter"
	ClassVehicle    = "vehicle"
)

// Identification methods as logged in id_by.
const (
	idByAPIKey      = "api_key"
	idByCertificate = "certificate"
	idByMQTTClient  = "mqtt_client_id"
)

// cmdSpec is one command of a class grammar: the raw request a device sends
// and what the enforcement point logs about it.
type cmdSpec struct {
	name   string // short name, for descriptions
	method string // HTTP method or MQTT operation
	pre    string // path or topic before the device id; "" if the path has no device id
	post   string // path or topic after the device id (the whole path when pre is "")
	// arg names the numeric query parameter the request carries ("" if none):
	// a thermostat's setpoint, see device.setpoint.
	arg    string
	status uint16 // normal status (HTTP) or reason code (MQTT)
	in     [2]int32
	out    [2]int32
	latMs  [2]float64
	// after is the mean number of seconds until the device's next event, with a
	// uniform jitter of ±jitter·after; when cyclic, after is divided by the class's
	// daily multiplier for the local hour.
	after  float64
	jitter float64
	cyclic bool
	next   []edge
}

// edge is a transition of the grammar's Markov chain. Weights are relative; a
// day edge's weight is multiplied by the class's daily multiplier.
type edge struct {
	to  uint8
	w   float64
	day bool
}

// classSpec is a device class: its model, identification, grammar and cycles.
type classSpec struct {
	name   string
	class  string // the "class" field: name/model
	prefix string // device id prefix
	mqtt   bool
	idBy   string
	mobile bool // uses mobile networks (else residential)
	fws    []string
	newFw  string // what the vendor's OTA campaign installs ("" if none)
	cmds   []cmdSpec
	start  uint8   // initial grammar state
	main   uint8   // the command a flood repeats
	ota    []uint8 // OTA sequence (check, download, report), nil if the class has none
	// reconnect is what the device sends when it comes back after being offline:
	// MQTT CONNECT/SUBSCRIBE, or a backlog of telemetry for HTTP devices.
	reconnect []uint8
	daily     [24]float64 // rate multiplier by local hour
	weight    int         // devices of this class per 20 devices
	privOK    bool        // may legitimately issue unlock/lock
}

var classes = []*classSpec{thermostat, camera, smartLock, meter, vehicle}

const (
	thermTelemetry = iota
	thermConfig
	thermSchedule
	thermFwCheck
	thermFwDownload
	thermFwStatus
	thermSetpoint
)

// Thermostat setpoints, in tenths of a degree Celsius (see device.setpoint).
const (
	setpointMin  = 180 // an owner's preferred temperature is in [setpointMin, setpointMax]
	setpointMax  = 240
	setpointStep = 5    // apps step by 0.5 °C
	setpointEco  = 0.15 // share of settings 3-4 °C below the preference (away, night)
)

var thermostat = &classSpec{
	name: ClassThermostat, class: "thermostat/acme-t100", prefix: "therm",
	idBy: idByAPIKey, fws: []string{"2.4.1", "2.4.1", "2.3.7"}, newFw: "2.5.0",
	cmds: []cmdSpec{
		thermTelemetry: {name: "telemetry", method: "POST", pre: "/v1/devices/", post: "/telemetry", status: 201,
			in: [2]int32{180, 420}, out: [2]int32{32, 64}, latMs: [2]float64{8, 40}, after: 60, jitter: 0.1, cyclic: true,
			next: []edge{{thermTelemetry, 0.975, false}, {thermConfig, 0.015, false}, {thermSchedule, 0.01, true}, {thermSetpoint, 0.003, true}}},
		thermConfig: {name: "config", method: "GET", pre: "/v1/devices/", post: "/config", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{400, 1400}, latMs: [2]float64{5, 30}, after: 60, jitter: 0.1, cyclic: true,
			next: []edge{{thermTelemetry, 1, false}}},
		thermSchedule: {name: "schedule", method: "GET", pre: "/v1/devices/", post: "/schedule", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{200, 900}, latMs: [2]float64{5, 30}, after: 60, jitter: 0.1, cyclic: true,
			next: []edge{{thermTelemetry, 1, false}}},
		thermFwCheck: {name: "firmware check", method: "GET", pre: "/v1/devices/", post: "/firmware/latest", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{150, 300}, latMs: [2]float64{10, 40}, after: 2, jitter: 0.5,
			next: []edge{{thermTelemetry, 1, false}}},
		thermFwDownload: {name: "firmware download", method: "GET", post: "/v1/firmware/acme-t100/2.5.0", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{1_200_000, 1_300_000}, latMs: [2]float64{800, 4000}, after: 20, jitter: 0.5,
			next: []edge{{thermTelemetry, 1, false}}},
		thermFwStatus: {name: "firmware status", method: "POST", pre: "/v1/devices/", post: "/firmware/status", status: 204,
			in: [2]int32{80, 160}, out: [2]int32{0, 0}, latMs: [2]float64{10, 40}, after: 60, jitter: 0.3,
			next: []edge{{thermTelemetry, 1, false}}},
		// The owner's app, on the home network, sets the temperature; the cloud
		// pushes it to the thermostat, which reports soon after.
		thermSetpoint: {name: "setpoint", method: "PUT", pre: "/v1/devices/", post: "/setpoint", arg: "temp", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{60, 140}, latMs: [2]float64{20, 120}, after: 10, jitter: 0.5,
			next: []edge{{thermTelemetry, 1, false}}},
	},
	start: thermTelemetry, main: thermTelemetry,
	ota:       []uint8{thermFwCheck, thermFwDownload, thermFwStatus},
	reconnect: []uint8{thermTelemetry, thermTelemetry, thermTelemetry},
	daily: [24]float64{0.7, 0.7, 0.7, 0.7, 0.7, 0.8, 1.1, 1.3, 1.2, 1.0, 1.0, 1.0,
		1.0, 1.0, 1.0, 1.0, 1.1, 1.3, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8},
	weight: 6,
}

const (
	camMedia = iota
	camMotion
	camStreamToken
	camFwCheck
	camFwDownload
	camFwStatus
)

var camera = &classSpec{
	name: ClassCamera, class: "camera/vistacam-c2", prefix: "cam",
	idBy: idByAPIKey, fws: []string{"5.1.0", "5.1.0", "5.0.3"}, newFw: "5.2.0",
	cmds: []cmdSpec{
		camMedia: {name: "media upload", method: "POST", pre: "/v1/devices/", post: "/media", status: 201,
			in: [2]int32{120_000, 900_000}, out: [2]int32{40, 90}, latMs: [2]float64{40, 400}, after: 10, jitter: 0.2, cyclic: true,
			next: []edge{{camMedia, 0.955, false}, {camMotion, 0.03, true}, {camStreamToken, 0.015, true}}},
		camMotion: {name: "motion event", method: "POST", pre: "/v1/devices/", post: "/events", status: 201,
			in: [2]int32{300, 900}, out: [2]int32{40, 90}, latMs: [2]float64{8, 40}, after: 3, jitter: 0.5,
			next: []edge{{camMedia, 1, false}}},
		camStreamToken: {name: "stream token", method: "GET", pre: "/v1/devices/", post: "/stream-token", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{300, 600}, latMs: [2]float64{10, 50}, after: 5, jitter: 0.5,
			next: []edge{{camMedia, 1, false}}},
		camFwCheck: {name: "firmware check", method: "GET", pre: "/v1/devices/", post: "/firmware/latest", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{150, 300}, latMs: [2]float64{10, 40}, after: 2, jitter: 0.5,
			next: []edge{{camMedia, 1, false}}},
		camFwDownload: {name: "firmware download", method: "GET", post: "/v1/firmware/vistacam-c2/5.2.0", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{8_000_000, 8_400_000}, latMs: [2]float64{3000, 12000}, after: 30, jitter: 0.5,
			next: []edge{{camMedia, 1, false}}},
		camFwStatus: {name: "firmware status", method: "POST", pre: "/v1/devices/", post: "/firmware/status", status: 204,
			in: [2]int32{80, 160}, out: [2]int32{0, 0}, latMs: [2]float64{10, 40}, after: 10, jitter: 0.3,
			next: []edge{{camMedia, 1, false}}},
	},
	start: camMedia, main: camMedia,
	ota:       []uint8{camFwCheck, camFwDownload, camFwStatus},
	reconnect: []uint8{camMedia, camMedia, camMedia, camMedia},
	daily: [24]float64{0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.9, 1.1, 1.2, 1.2, 1.2, 1.2,
		1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6},
	weight: 2,
}

const (
	lockStatus = iota
	lockUnlock
	lockLock
	lockBattery
	lockConnect
	lockSubscribe
)

var smartLock = &classSpec{
	name: ClassSmartLock, class: "smart_lock/keyless-l3", prefix: "lock",
	mqtt: true, idBy: idByMQTTClient, fws: []string{"1.8.2", "1.8.2", "1.8.0"},
	cmds: []cmdSpec{
		lockStatus: {name: "status", method: "PUBLISH", pre: "devices/", post: "/status",
			in: [2]int32{60, 140}, out: [2]int32{4, 4}, latMs: [2]float64{1, 6}, after: 120, jitter: 0.1,
			next: []edge{{lockStatus, 0.986, false}, {lockUnlock, 0.004, true}, {lockBattery, 0.01, false}}},
		lockUnlock: {name: "unlock", method: "PUBLISH", pre: "devices/", post: "/unlock",
			in: [2]int32{40, 90}, out: [2]int32{4, 4}, latMs: [2]float64{1, 6}, after: 45, jitter: 0.5,
			next: []edge{{lockLock, 1, false}}},
		lockLock: {name: "lock", method: "PUBLISH", pre: "devices/", post: "/lock",
			in: [2]int32{40, 90}, out: [2]int32{4, 4}, latMs: [2]float64{1, 6}, after: 120, jitter: 0.1,
			next: []edge{{lockStatus, 1, false}}},
		lockBattery: {name: "battery", method: "PUBLISH", pre: "devices/", post: "/battery",
			in: [2]int32{40, 80}, out: [2]int32{4, 4}, latMs: [2]float64{1, 6}, after: 120, jitter: 0.1,
			next: []edge{{lockStatus, 1, false}}},
		lockConnect: {name: "connect", method: "CONNECT",
			in: [2]int32{80, 160}, out: [2]int32{4, 4}, latMs: [2]float64{5, 30}, after: 1, jitter: 0.5,
			next: []edge{{lockStatus, 1, false}}},
		lockSubscribe: {name: "subscribe", method: "SUBSCRIBE", pre: "devices/", post: "/cmd/#",
			in: [2]int32{30, 60}, out: [2]int32{5, 5}, latMs: [2]float64{1, 6}, after: 2, jitter: 0.5,
			next: []edge{{lockStatus, 1, false}}},
	},
	start: lockStatus, main: lockStatus,
	reconnect: []uint8{lockConnect, lockSubscribe},
	daily: [24]float64{0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 1.2, 2.0, 1.8, 1.0, 0.8, 0.8,
		1.0, 0.9, 0.8, 1.0, 1.4, 2.0, 2.2, 1.8, 1.2, 0.8, 0.4, 0.2},
	weight: 3, privOK: true,
}

const (
	meterReadings = iota
	meterConfig
	meterAlarm
)

var meter = &classSpec{
	name: ClassMeter, class: "meter/gridline-m1", prefix: "meter",
	idBy: idByCertificate, fws: []string{"3.0.4", "3.0.4", "3.0.2"},
	cmds: []cmdSpec{
		meterReadings: {name: "readings", method: "POST", pre: "/v1/devices/", post: "/readings", status: 201,
			in: [2]int32{240, 520}, out: [2]int32{32, 64}, latMs: [2]float64{8, 40}, after: 300, jitter: 0.03,
			next: []edge{{meterReadings, 0.995, false}, {meterConfig, 0.004, false}, {meterAlarm, 0.001, false}}},
		meterConfig: {name: "config", method: "GET", pre: "/v1/devices/", post: "/config", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{300, 800}, latMs: [2]float64{5, 30}, after: 300, jitter: 0.03,
			next: []edge{{meterReadings, 1, false}}},
		meterAlarm: {name: "alarm", method: "POST", pre: "/v1/devices/", post: "/alarms", status: 201,
			in: [2]int32{150, 400}, out: [2]int32{32, 64}, latMs: [2]float64{8, 40}, after: 300, jitter: 0.03,
			next: []edge{{meterReadings, 1, false}}},
	},
	start: meterReadings, main: meterReadings,
	reconnect: []uint8{meterReadings, meterReadings},
	daily:     [24]float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
	weight:    6,
}

const (
	vehHeartbeat = iota
	vehTripStart
	vehTelemetry
	vehTripEnd
	vehConfig
	vehDiagnostics
)

var vehicle = &classSpec{
	name: ClassVehicle, class: "vehicle/volta-v8", prefix: "veh",
	idBy: idByAPIKey, mobile: true, fws: []string{"8.12.0", "8.12.0", "8.11.3"},
	cmds: []cmdSpec{
		vehHeartbeat: {name: "heartbeat", method: "POST", pre: "/v1/devices/", post: "/heartbeat", status: 204,
			in: [2]int32{90, 200}, out: [2]int32{0, 0}, latMs: [2]float64{30, 180}, after: 600, jitter: 0.1,
			next: []edge{{vehHeartbeat, 0.893, false}, {vehTripStart, 0.1, true}, {vehConfig, 0.005, false}, {vehDiagnostics, 0.002, false}}},
		vehTripStart: {name: "trip start", method: "POST", pre: "/v1/devices/", post: "/trips", status: 201,
			in: [2]int32{200, 400}, out: [2]int32{60, 120}, latMs: [2]float64{30, 180}, after: 30, jitter: 0.15,
			next: []edge{{vehTelemetry, 1, false}}},
		vehTelemetry: {name: "telemetry", method: "POST", pre: "/v1/devices/", post: "/telemetry", status: 201,
			in: [2]int32{400, 1200}, out: [2]int32{32, 64}, latMs: [2]float64{30, 180}, after: 30, jitter: 0.15,
			next: []edge{{vehTelemetry, 0.97, false}, {vehTripEnd, 0.03, false}}},
		vehTripEnd: {name: "trip end", method: "POST", pre: "/v1/devices/", post: "/trips/end", status: 200,
			in: [2]int32{200, 400}, out: [2]int32{60, 120}, latMs: [2]float64{30, 180}, after: 600, jitter: 0.1,
			next: []edge{{vehHeartbeat, 1, false}}},
		vehConfig: {name: "config", method: "GET", pre: "/v1/devices/", post: "/config", status: 200,
			in: [2]int32{0, 0}, out: [2]int32{500, 2000}, latMs: [2]float64{30, 180}, after: 600, jitter: 0.1,
			next: []edge{{vehHeartbeat, 1, false}}},
		vehDiagnostics: {name: "diagnostics", method: "POST", pre: "/v1/devices/", post: "/diagnostics", status: 202,
			in: [2]int32{2_000, 20_000}, out: [2]int32{40, 80}, latMs: [2]float64{50, 300}, after: 600, jitter: 0.1,
			next: []edge{{vehHeartbeat, 1, false}}},
	},
	start: vehHeartbeat, main: vehTelemetry,
	reconnect: []uint8{vehHeartbeat},
	daily: [24]float64{0.05, 0.03, 0.03, 0.03, 0.05, 0.2, 0.8, 1.8, 1.6, 0.9, 0.8, 0.9,
		1.1, 1.0, 0.9, 1.0, 1.4, 1.9, 1.7, 1.2, 0.8, 0.5, 0.3, 0.1},
	weight: 3,
}

// Commands used only by attacks. They never appear in legitimate traffic.
var (
	atkUnlock = cmdSpec{name: "unlock", method: "POST", pre: "/v1/devices/", post: "/unlock",
		in: [2]int32{40, 120}, out: [2]int32{40, 120}, latMs: [2]float64{10, 60}}
	atkFirmware = cmdSpec{name: "firmware update", method: "POST", pre: "/v1/devices/", post: "/firmware",
		in: [2]int32{200, 600}, out: [2]int32{40, 120}, latMs: [2]float64{20, 120}}
	atkEnumStatus = cmdSpec{name: "status", method: "GET", pre: "/v1/devices/", post: "/status",
		in: [2]int32{0, 0}, out: [2]int32{60, 140}, latMs: [2]float64{5, 40}}
	atkToken = cmdSpec{name: "token", method: "POST", post: "/v1/auth/token", status: 401,
		in: [2]int32{120, 300}, out: [2]int32{40, 80}, latMs: [2]float64{20, 90}}
	// Reads of other data with a stolen key.
	atkReads = []cmdSpec{
		{name: "owner", method: "GET", pre: "/v1/devices/", post: "/owner", status: 200,
			out: [2]int32{300, 900}, latMs: [2]float64{10, 60}},
		{name: "history", method: "GET", pre: "/v1/devices/", post: "/history", status: 200,
			out: [2]int32{20_000, 400_000}, latMs: [2]float64{50, 400}},
		{name: "account devices", method: "GET", post: "/v1/account/devices", status: 200,
			out: [2]int32{2_000, 30_000}, latMs: [2]float64{20, 150}},
		{name: "recordings", method: "GET", pre: "/v1/devices/", post: "/recordings", status: 200,
			out: [2]int32{1_000, 8_000}, latMs: [2]float64{20, 150}},
	}
)
