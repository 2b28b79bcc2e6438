# iotwatch: `make demo` runs the whole pipeline on a simulated fleet; `make test` runs every test.
# Both install what is missing first (the clickhouse-server Debian package).

GO      ?= go
BIN     := bin/iotwatch
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DEMO_FLAGS ?=

.PHONY: all build build-plot deps nats-server demo test vet bench bench-e2e bench-state fuzz docs clean help geoip

all: build

help:
	@echo "make demo       run the end-to-end demo (embedded NATS, private ClickHouse, simulated fleet with attacks)"
	@echo "make test       run every test (unit, golden scenarios, integration against real NATS and ClickHouse)"
	@echo "make build      build $(BIN)"
	@echo "make build-plot build $(BIN) able to plot (eval attacks --plot DIR)"
	@echo "make deps       install missing system packages (clickhouse-server, zookeeper, nginx, mosquitto, nats-server)"
	@echo "make nats-server build the real nats-server at the go.mod version into $(NATS_SERVER_MODULE) (cluster tests)"
	@echo "make bench      run the Go benchmarks and the end-to-end benchmark (results in bench/out/)"
	@echo "make fuzz       run every fuzz target for FUZZTIME each (default 20s)"
	@echo "make geoip      fetch a free country database (ip-location-db, via npm) into $(GEOIP_DB)"

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/iotwatch

# build-plot builds $(BIN) with the plotting stack, for 'iotwatch eval attacks --plot DIR'
# (the production binary leaves gonum.org/v1/plot, its fonts and its PDF and SVG writers out).
build-plot:
	$(GO) build -tags plot -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/iotwatch

# deps installs clickhouse-server when no binary is found, Debian's zookeeper (the tests of
# Replicated tables and ON CLUSTER start a private one; it does not run as a service), and
# Debian's nats-server (2.9, used by the test that runs against an external NATS process;
# the demo embeds its own).
# Elsewhere than Debian/Ubuntu, install them yourself: https://clickhouse.com/docs/en/install
# (any release from 18.16 on works) and https://docs.nats.io/running-a-nats-service/introduction/installation.
deps:
	@if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse >/dev/null 2>&1; then \
		: ; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "clickhouse-server is missing: installing the Debian package"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null \
		|| { echo "cannot install clickhouse-server; install it by hand: https://clickhouse.com/docs/en/install"; exit 1; }; \
	else \
		echo "clickhouse-server is missing and this is not a Debian system: install it from https://clickhouse.com/docs/en/install"; exit 1; \
	fi
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "nginx is missing: installing the Debian package (the log-format tests run a real NGINX)"; \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx >/dev/null \
			|| { echo "cannot install nginx; install it by hand"; exit 1; }; \
			$$SUDO service nginx stop >/dev/null 2>&1 || true; \
		else \
			echo "nginx is missing: install it (https://nginx.org/en/linux_packages.html)"; exit 1; \
		fi; \
	fi
	@if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_ctrl >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "mosquitto is missing: installing the Debian packages mosquitto and mosquitto-clients (the enforce mosquitto tests run a real broker)"; \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null \
			|| { echo "cannot install mosquitto; install it by hand"; exit 1; }; \
			$$SUDO service mosquitto stop >/dev/null 2>&1 || true; \
		else \
			echo "mosquitto is missing: install Mosquitto 2 with its clients (https://mosquitto.org/download/)"; exit 1; \
		fi; \
	fi
	@if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "zookeeper is missing: installing the Debian package (the ClickHouse cluster tests run Replicated tables and ON CLUSTER, which need it on 18.16)"; \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq zookeeper >/dev/null \
			|| { echo "cannot install zookeeper; install it by hand"; exit 1; }; \
		else \
			echo "zookeeper is missing: install Apache ZooKeeper 3.x so that /usr/share/java/zookeeper.jar exists (https://zookeeper.apache.org/releases.html)"; exit 1; \
		fi; \
	fi
	@if ! command -v nats-server >/dev/null 2>&1 && [ -z "$$IOTWATCH_NATS_SERVER" ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "nats-server is missing: installing the Debian package"; \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nats-server >/dev/null \
			|| { echo "cannot install nats-server; install it by hand or set IOTWATCH_NATS_SERVER"; exit 1; }; \
		else \
			echo "nats-server is missing: install it or set IOTWATCH_NATS_SERVER to its path"; exit 1; \
		fi; \
	fi

# The real nats-server at the version go.mod requires, built from the module cache (a
# dependency of this module) into a per-version cache path: the cluster tests run three
# of it (internal/natsserver.FindModuleBinary reads IOTWATCH_NATS_SERVER_MODULE, else
# this same default path). Debian's 2.9 (deps) stays for the tests of an older server.
NATS_SERVER_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2 2>/dev/null)
IOTWATCH_NATS_SERVER_MODULE ?= $(HOME)/.cache/iotwatch/nats-server-$(NATS_SERVER_VERSION)
NATS_SERVER_MODULE := $(IOTWATCH_NATS_SERVER_MODULE)
export IOTWATCH_NATS_SERVER_MODULE

nats-server:
	@if [ ! -x "$(NATS_SERVER_MODULE)" ]; then \
		echo "building nats-server $(NATS_SERVER_VERSION) into $(NATS_SERVER_MODULE)"; \
		mkdir -p "$(dir $(NATS_SERVER_MODULE))" && \
		$(GO) build -o "$(NATS_SERVER_MODULE).tmp" github.com/nats-io/nats-server/v2 && \
		mv "$(NATS_SERVER_MODULE).tmp" "$(NATS_SERVER_MODULE)"; \
	fi

demo: deps build
	./$(BIN) demo $(DEMO_FLAGS)

vet:
	$(GO) vet ./...
	$(GO) vet -tags plot ./cmd/iotwatch

test: deps nats-server vet
	$(GO) test -race -count=1 -timeout 30m ./...

bench: deps
	mkdir -p bench/out
	$(GO) test -run '^$$' -bench . -benchmem ./schemas/ ./detectors/... ./pipeline/... | tee bench/out/go-bench.txt
	$(GO) run ./bench/e2e | tee bench/out/e2e.txt

bench-e2e: deps
	$(GO) run ./bench/e2e

bench-state:
	$(GO) run ./bench/statebench -devices 1000000

FUZZTIME ?= 20s
# fuzz runs every fuzz target of the repository for FUZZTIME each (go test runs one target at a time).
# FUZZTIME is a duration (20s) or a count of executions (50000x); CI uses a count, which
# Go 1.26's coordinator cannot fail by a deadline race (go.dev/issue/75804).
fuzz:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r pkg; do \
		for t in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# geoip fetches the country database of the npm package @ip-location-db/geo-whois-asn-country-mmdb
# (package license CC0-1.0; its data comes from NRO statistics, CC BY 4.0: attribute nro.net) with
# `npm pack`, and keeps its combined IPv4+IPv6 file. The demo uses it when present (--geoip FILE elsewhere).
GEOIP_PKG ?= @ip-location-db/geo-whois-asn-country-mmdb
GEOIP_DB  ?= var/geoip/geo-whois-asn-country.mmdb
geoip:
	@command -v npm >/dev/null 2>&1 || { echo "make geoip needs npm (Debian: apt-get install npm)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	(cd "$$tmp" && npm pack --silent $(GEOIP_PKG) >/dev/null); \
	tar -xzf "$$tmp"/*.tgz -C "$$tmp" package/geo-whois-asn-country.mmdb package/NRO_LICENSE package/package.json; \
	mkdir -p $(dir $(GEOIP_DB)); \
	cp "$$tmp"/package/geo-whois-asn-country.mmdb $(GEOIP_DB).tmp && mv $(GEOIP_DB).tmp $(GEOIP_DB); \
	cp "$$tmp"/package/NRO_LICENSE $(dir $(GEOIP_DB))NRO_LICENSE; \
	echo "$(GEOIP_DB): $$(wc -c <$(GEOIP_DB)) bytes, $(GEOIP_PKG)@$$(sed -n 's/.*"version": *"\(.*\)".*/\1/p' "$$tmp"/package/package.json)"

clean:
	rm -rf bin var bench/out
