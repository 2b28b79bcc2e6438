package websim

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// User agents, as real clients send them.
var (
	browserUAs = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
	}
	crawlerUAs = []string{
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
		"Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
		"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
		"DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
		"Mozilla/5.0 (compatible; Applebot/0.1; +http://www.apple.com/go/applebot)",
	}
	integrationUAs = []string{"python-requests/2.32.3", "Go-http-client/1.1", "okhttp/4.12.0", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
		"Zapier", "axios/1.7.7", "curl/8.5.0"}
	monitorUAs = []string{"Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
		"Better Uptime Bot Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", "kube-probe/1.31", "Blackbox Exporter/0.25.0"}
	deviceUAs  = []string{"acme-sensor/2.4.1", "vistacam-fw/1.8.2", "gridline-m1/3.0.7", "ESP32HTTPClient/1.2", "thermo-t100/5.1.0"}
	gatewayUAs = []string{"edge-gw/3.1.0", "lorawan-bridge/1.9.4", "modbus-gw/2.2"}
	attackUAs  = []string{"python-requests/2.31.0", "curl/7.88.1", "Go-http-client/1.1", "Mozilla/5.0 zgrab/0.x",
		"Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)", "sqlmap/1.7.2#stable (https://sqlmap.org)"}
)

// The site.
var (
	words     = []string{"sensor", "camera", "setup", "pricing", "battery", "firmware", "install", "outdoor", "wifi", "reset", "guide", "api", "alerts", "energy", "home"}
	docPages  = []string{"getting-started", "wifi", "pairing", "api/auth", "api/devices", "troubleshooting", "faq", "webhooks"}
	pageKinds = []string{"/", "/products", "/products/%d", "/products/%d", "/pricing", "/blog", "/blog/%s-%s", "/docs/%s", "/about",
		"/contact", "/search?q=%s", "/products/%d/reviews"}
	assetKinds = []string{"/static/js/app.%x.js", "/static/js/vendor.%x.js", "/static/css/main.%x.css", "/img/%s-%d.webp", "/img/%s-%d.jpg",
		"/fonts/inter-%d.woff2", "/static/js/chunk-%x.js", "/img/icons/%s.svg"}
	probePaths = []string{"/.env", "/.git/config", "/wp-login.php", "/wp-admin/", "/xmlrpc.php", "/admin", "/admin/login", "/phpmyadmin/",
		"/pma/", "/config.php", "/backup.zip", "/db.sql", "/.aws/credentials", "/server-status", "/actuator/env", "/.DS_Store",
		"/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/cgi-bin/luci", "/boaform/admin/formLogin", "/HNAP1/", "/owa/",
		"/solr/admin/info/system", "/.well-known/security.txt", "/api/.env", "/app/.env", "/laravel/.env", "/test.php", "/info.php",
		"/shell.php", "/wp-content/plugins/", "/console/", "/manager/html", "/jenkins/login", "/.svn/entries", "/web.config", "/old/",
		"/backup/", "/dump.sql", "/setup.php", "/install.php"}
	injectPaths = []string{"/products?id=1%27%20OR%20%271%27=%271", "/search?q=%27%20UNION%20SELECT%20NULL,NULL,NULL--",
		"/static/../../../../etc/passwd", "/download?file=../../../../etc/passwd", "/products/1%27%20AND%20SLEEP(5)--%20",
		"/api/v1/devices/1%20OR%201=1", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E", "/products?id=1;DROP%20TABLE%20users",
		"/..%2f..%2f..%2fetc%2fpasswd", "/index.php?page=php://filter/convert.base64-encode/resource=index",
		"/products?sort=name%20desc;SELECT%20pg_sleep(5)", "/docs/%2e%2e/%2e%2e/%2e%2e/etc/shadow", "/login?next=//evil.example/"}
)

// dayFactor is how active people are at an hour (UTC = the site's local time).
func dayFactor(t int64) float64 {
	h := time.Unix(0, t).UTC().Hour()
	switch {
	case h < 6:
		return 0.12
	case h < 8:
		return 0.5
	case h < 18:
		return 1
	case h < 23:
		return 0.7
	}
	return 0.3
}

func (l *Log) newActor(label int, kind, ua string, stream uint64) *actor {
	a := &actor{label: label, kind: kind, ua: ua, rng: newRNG(l.cfg.Seed, stream), end: l.end}
	l.actors = append(l.actors, a)
	return a
}

// addBenign adds the i-th benign address and its clients.
func (l *Log) addBenign(i int, kind string, start int64) {
	r := newRNG(l.cfg.Seed, uint64(1+i)<<20)
	first := map[string]int{KindHome: 81, KindOffice: 193, KindCrawler: 66, KindIntegration: 52, KindMonitor: 69, KindDevice: 92, KindGateway: 88}[kind]
	ip := fmt.Sprintf("%d.%d.%d.%d", first, 1+i>>8&255, i&255, r.between(1, 254))
	label := len(l.labels)
	l.labels = append(l.labels, Label{IP: ip, Kind: kind})
	stream := uint64(1+i) << 20
	span := l.end - start
	switch kind {
	case KindHome, KindOffice:
		people := r.between(1, 3)
		if kind == KindOffice {
			people = r.between(5, 40)
		}
		for p := range people {
			a := l.newActor(label, kind, pick(&r, browserUAs), stream+uint64(1+p))
			a.plan = planPerson
			a.next = start + int64(a.rng.Float()*float64(30*time.Minute))
			login := 0.3
			if kind == KindOffice {
				login = 0.5
				if a.rng.Float() < 0.12 {
					a.phase = 1 // an administrator
				}
			}
			if a.rng.Float() < login {
				for range a.rng.between(1, 5) {
					a.ids = append(a.ids, "dev-"+pad6(a.rng.Intn(900000)))
				}
			}
		}
	case KindCrawler:
		a := l.newActor(label, kind, pick(&r, crawlerUAs), stream+1)
		a.plan, a.period = planCrawler, sec(2+18*r.Float())
		a.next = start + int64(r.Float()*float64(a.period))
	case KindIntegration:
		a := l.newActor(label, kind, pick(&r, integrationUAs), stream+1)
		if r.Float() < 0.3 {
			a.user = "svc-" + pick(&r, words) + "-" + strconv.Itoa(r.between(1, 99))
		}
		a.plan, a.period, a.phase = planIntegration, sec(float64(60*r.between(1, 5))), sec(60*r.Float())
		a.next = start + int64(r.Float()*float64(a.period))
	case KindMonitor:
		a := l.newActor(label, kind, pick(&r, monitorUAs), stream+1)
		a.plan, a.period = planMonitor, sec(float64(pick(&r, []int{30, 60, 60, 300})))
		a.next = start + int64(r.Float()*float64(a.period))
	case KindDevice:
		a := l.newActor(label, kind, pick(&r, deviceUAs), stream+1)
		id := "dev-" + pad6(r.Intn(900000))
		if r.Float() < 0.5 {
			a.user = id
		}
		a.ids = []string{id}
		a.plan, a.period = planDevice, sec(float64(pick(&r, []int{30, 60, 60, 120, 300})))
		a.next = start + int64(r.Float()*float64(a.period))
	case KindGateway:
		ua := pick(&r, gatewayUAs)
		period := sec(float64(pick(&r, []int{30, 60, 300})))
		for d := range r.between(5, 40) {
			a := l.newActor(label, kind, ua, stream+uint64(1+d))
			a.ids = []string{"dev-" + pad6(r.Intn(900000))}
			a.plan, a.period = planDevice, period
			a.next = start + int64(a.rng.Float()*float64(period))
		}
	}
	_ = span
}

// addAttacker adds the i-th attacking address.
func (l *Log) addAttacker(i int, typ string, start int64) {
	r := newRNG(l.cfg.Seed, uint64(1+i)<<40)
	first := []int{45, 185, 103, 91, 194}[i%5]
	ip := fmt.Sprintf("%d.%d.%d.%d", first, 100+i>>8&127, i&255, r.between(1, 254))
	label := len(l.labels)
	l.labels = append(l.labels, Label{IP: ip, Kind: typ, Attack: typ})
	span := l.end - start
	ua := pick(&r, attackUAs)
	if r.Float() < 0.4 || typ == AttackFlood {
		ua = pick(&r, browserUAs) // spoofed
	}
	a := l.newActor(label, typ, ua, uint64(1+i)<<40+1)
	a.next = start + int64((0.2+0.65*r.Float())*float64(span))
	switch typ {
	case AttackStuffing:
		a.plan = planStuffing
	case AttackScanner:
		a.plan = planScanner
	case AttackInjection:
		a.plan = planInjection
	case AttackFlood:
		a.plan = planFlood
	case AttackEnumeration:
		a.plan = planEnumeration
		a.next = start + int64((0.2+0.4*r.Float())*float64(span))
	}
}

func pad6(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 6 {
		s = "0" + s
	}
	return s
}

func (a *actor) add(t int64, method, path string, status, bytes int, referer string) {
	a.queue = append(a.queue, req{t: t, method: method, path: path, status: status, bytes: bytes, referer: referer})
}

const site = "https://www.example-iot.com"

// planPerson: idle, then a session of page views, each pulling its assets.
func planPerson(a *actor, from int64) bool {
	r := &a.rng
	t := from
	if a.state == 0 { // between sessions
		first := a.period == 0
		a.period = 1
		if !first || r.Float() < 0.6 { // some are already browsing when the log starts
			gap := r.lognormal(1800, 1.0) / dayFactor(from)
			t = from + sec(math.Min(gap, 8*3600))
		}
		if t >= a.end {
			return false
		}
		a.state = 1 + int(math.Min(r.lognormal(6, 0.8), 80))
		a.n = 0
		if len(a.ids) > 0 { // a user with an account logs in
			if r.Float() < 0.05 {
				a.add(t, "POST", "/login", 401, 612, site+"/login")
				t += sec(4 + 10*r.Float())
			}
			a.add(t, "POST", "/login", 302, 0, site+"/login")
			t += sec(0.3 + r.Float())
		}
	} else {
		t = from + sec(math.Min(r.lognormal(15, 1.0), 600))
		if t >= a.end {
			return false
		}
	}
	a.page(t)
	a.state--
	a.n++
	return true
}

// page adds one page view at t: the document, then its assets.
func (a *actor) page(t int64) {
	r := &a.rng
	var path string
	switch {
	case a.phase == 1 && r.Float() < 0.3:
		path = pick(r, []string{"/admin", "/admin/users", "/admin/settings", "/admin/audit"})
	case len(a.ids) > 0 && r.Float() < 0.5:
		path = pick(r, []string{"/dashboard", "/dashboard/devices", "/account"})
	default:
		path = sitePath(r)
	}
	status := 200
	if r.Float() < 0.01 {
		status = 404 // a stale link
	}
	a.add(t, "GET", path, status, 8000+r.Intn(70000), site+"/")
	ref := site + path
	assets := int(math.Min(r.lognormal(25, 0.6), 120))
	if a.n > 0 {
		assets = max(1, assets/4) // cached
	}
	at := t + sec(0.05+0.2*r.Float())
	for k := range assets {
		at += sec(r.exp(0.03))
		st := 200
		if a.n > 0 && r.Float() < 0.5 {
			st = 304
		}
		a.add(at, "GET", assetPath(r, k), st, 500+r.Intn(200000), ref)
	}
	if a.n == 0 && r.Float() < 0.05 {
		a.add(at+sec(0.01), "GET", "/favicon.ico", 404, 162, ref)
	}
	if len(a.ids) > 0 && (path == "/dashboard" || path == "/dashboard/devices") {
		at += sec(0.1)
		a.add(at, "GET", "/api/v1/devices?page=1", 200, 2000+r.Intn(5000), ref)
		for _, id := range a.ids {
			at += sec(r.exp(0.05))
			a.add(at, "GET", "/api/v1/devices/"+id+"/status", 200, 300+r.Intn(400), ref)
		}
	}
}

func sitePath(r *rng) string {
	k := pick(r, pageKinds)
	switch {
	case k == "/products/%d" || k == "/products/%d/reviews":
		return fmt.Sprintf(k, 1000+r.Intn(4000))
	case k == "/blog/%s-%s":
		return fmt.Sprintf(k, pick(r, words), pick(r, words))
	case k == "/docs/%s":
		return fmt.Sprintf(k, pick(r, docPages))
	case k == "/search?q=%s":
		return fmt.Sprintf(k, pick(r, words))
	}
	return k
}

func assetPath(r *rng, k int) string {
	f := assetKinds[(k+r.Intn(3))%len(assetKinds)]
	switch f {
	case "/img/%s-%d.webp", "/img/%s-%d.jpg":
		return fmt.Sprintf(f, pick(r, words), r.Intn(400))
	case "/fonts/inter-%d.woff2":
		return fmt.Sprintf(f, 100*(1+r.Intn(9)))
	case "/img/icons/%s.svg":
		return fmt.Sprintf(f, pick(r, words))
	}
	return fmt.Sprintf(f, 0x10000000+r.Intn(1<<20))
}

// planCrawler: robots.txt every hour, pages at a steady pace.
func planCrawler(a *actor, from int64) bool {
	r := &a.rng
	t := a.poisson(from)
	if t >= a.end {
		return false
	}
	if a.n == 0 || t-a.phase >= int64(time.Hour) {
		a.phase = t
		a.add(t, "GET", "/robots.txt", 200, 312, "")
		if r.Float() < 0.5 {
			a.add(t+sec(1), "GET", "/sitemap.xml", 200, 48000, "")
		}
		a.n++
		return true
	}
	a.n++
	path, st := sitePath(r), 200
	switch u := r.Float(); {
	case u < 0.04:
		path, st = fmt.Sprintf("/products/%d", 1000+r.Intn(20000)), 404
	case u < 0.07:
		st = 301
	}
	a.add(t, "GET", path, st, 6000+r.Intn(60000), "")
	return true
}

// planIntegration: polls every period; an export at the top of each hour.
func planIntegration(a *actor, from int64) bool {
	r := &a.rng
	t := from
	if a.n > 0 {
		t += a.period + sec(4*r.Float()-2)
	}
	if t >= a.end {
		return false
	}
	hour := int((t - a.phase) / int64(time.Hour))
	if a.n > 0 && hour != a.state {
		a.state = hour
		at := max(int64(hour)*int64(time.Hour)+a.phase, from)
		for p := range r.between(50, 400) {
			at += sec(0.02 + 0.06*r.Float())
			st := 200
			if r.Float() < 0.04 {
				st = 429
				a.add(at, "GET", fmt.Sprintf("/api/v1/devices?page=%d&per_page=100", p+1), st, 120, "")
				at += sec(1)
				st = 200
			}
			if p%5 == 4 {
				a.add(at, "GET", fmt.Sprintf("/api/v1/reports/usage?day=2026-01-%02d&page=%d", 1+r.Intn(4), p/5), st, 20000+r.Intn(90000), "")
				continue
			}
			a.add(at, "GET", fmt.Sprintf("/api/v1/devices?page=%d&per_page=100", p+1), st, 20000+r.Intn(60000), "")
		}
		a.n++
		return true
	}
	if a.n == 0 {
		a.state = hour
	}
	a.n++
	a.add(t, "GET", "/api/v1/devices?page=1&per_page=100", 200, 20000+r.Intn(60000), "")
	if r.Float() < 0.5 {
		a.add(t+sec(0.1+0.2*r.Float()), "GET", "/api/v1/events?since=5m", 200, 500+r.Intn(9000), "")
	}
	return true
}

// planMonitor: one check per period.
func planMonitor(a *actor, from int64) bool {
	t := from
	if a.n > 0 {
		t += a.period
	}
	if t >= a.end {
		return false
	}
	a.n++
	switch a.n % 3 {
	case 0:
		a.add(t, "HEAD", "/", 200, 0, "")
	case 1:
		a.add(t, "GET", "/health", 200, 15, "")
	default:
		a.add(t, "GET", "/", 200, 31000, "")
	}
	return true
}

// planDevice: telemetry every period, the config every hour, retries of
// the rare server error.
func planDevice(a *actor, from int64) bool {
	r := &a.rng
	t := from
	if a.n > 0 {
		t += a.period + sec(2*r.Float()-1)
	}
	if t >= a.end {
		return false
	}
	id := a.ids[0]
	if a.n == 0 {
		a.phase = t
	}
	a.n++
	if r.Float() < 0.003 {
		a.add(t, "POST", "/api/v1/devices/"+id+"/telemetry", 502, 157, "")
		t += sec(1 + 3*r.Float())
	}
	a.add(t, "POST", "/api/v1/devices/"+id+"/telemetry", 201, 40+r.Intn(40), "")
	if hour := int((t - a.phase) / int64(time.Hour)); a.n == 1 || hour != a.state {
		a.state = hour
		a.add(t+sec(0.2), "GET", "/api/v1/devices/"+id+"/config", 200, 800+r.Intn(400), "")
	}
	return true
}

// planStuffing: POST /login at a few per second for minutes, mostly 401.
func planStuffing(a *actor, from int64) bool {
	r := &a.rng
	if a.n == 0 {
		a.state = 150 + r.Intn(900)
	}
	if a.n >= a.state {
		return false
	}
	t := from
	if a.n > 0 {
		t += sec(math.Min(r.lognormal(1.5, 0.7), 20))
	}
	a.n++
	st := 401
	if r.Float() < 0.02 {
		st = 302 // a working pair
	}
	a.add(t, "POST", "/login", st, 612, site+"/login")
	return true
}

// startBurst, before an actor's first request, draws how many requests it
// sends (n0 to n0+span-1) and their mean gap (g0 to g0+gspan seconds).
func (a *actor) startBurst(n0, span int, g0, gspan float64) {
	if a.n == 0 {
		a.state = n0 + a.rng.Intn(span)
		a.period = sec(g0 + gspan*a.rng.Float())
	}
}

// poisson returns the time of the actor's next request: from for its first,
// then from plus an exponential gap of mean a.period.
func (a *actor) poisson(from int64) int64 {
	if a.n == 0 {
		return from
	}
	return from + sec(a.rng.exp(float64(a.period)/1e9))
}

// planScanner: the probe list and a few guesses, quickly.
func planScanner(a *actor, from int64) bool {
	r := &a.rng
	a.startBurst(60, 340, 0.2, 2.8)
	if a.n >= a.state {
		return false
	}
	t := a.poisson(from)
	a.n++
	path, st := pick(r, probePaths), 404
	switch u := r.Float(); {
	case u < 0.3:
		path = "/" + pick(r, words) + pick(r, []string{".php", ".bak", ".old", "/", ".zip", ".tar.gz"})
	case path == "/admin" || path == "/admin/login":
		st = 302
	case u < 0.4:
		st = 403
	}
	a.add(t, "GET", path, st, 150+r.Intn(400), "")
	return true
}

// planInjection: SQL injection and traversal payloads on the site's pages.
func planInjection(a *actor, from int64) bool {
	r := &a.rng
	a.startBurst(20, 130, 1, 4)
	if a.n >= a.state {
		return false
	}
	t := a.poisson(from)
	a.n++
	st := 200
	switch u := r.Float(); {
	case u < 0.3:
		st = 400
	case u < 0.55:
		st = 404
	case u < 0.75:
		st = 500
	case u < 0.8:
		st = 403
	}
	a.add(t, "GET", pick(r, injectPaths), st, 150+r.Intn(3000), "")
	return true
}

// planFlood: tens to hundreds of requests a second for minutes.
func planFlood(a *actor, from int64) bool {
	r := &a.rng
	if a.n == 0 {
		rate := 40 + 210*r.Float()
		a.period = sec(1 / rate)
		a.phase = from + sec(120+240*r.Float()) // end
	}
	t := a.poisson(from)
	if t >= a.phase {
		return false
	}
	a.n++
	st := 200
	if t-from > 0 && r.Float() < 0.3 {
		st = 503
	}
	a.add(t, "GET", pick(r, []string{"/", "/search?q=" + pick(r, words), "/products"}), st, 150+r.Intn(30000), "")
	return true
}

// planEnumeration: one device id every few seconds, in sequence.
func planEnumeration(a *actor, from int64) bool {
	r := &a.rng
	if a.n == 0 {
		a.state = 200 + r.Intn(600)
		a.phase = int64(r.Intn(800000))
	}
	if a.n >= a.state {
		return false
	}
	t := from
	if a.n > 0 {
		t += sec(math.Min(r.lognormal(8, 0.5), 60))
	}
	a.n++
	st := 404
	switch u := r.Float(); {
	case u < 0.25:
		st = 403
	case u < 0.3:
		st = 200
	}
	a.add(t, "GET", "/api/v1/devices/dev-"+pad6(int(a.phase)+a.n), st, 120+r.Intn(600), "")
	return true
}
