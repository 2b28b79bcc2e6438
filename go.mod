module github.com/iotwatch/iotwatch

go 1.26

require (
	github.com/ClickHouse/clickhouse-go/v2 v2.50.0
	github.com/VictoriaMetrics/fastcache v1.13.0
	github.com/apache/arrow-go/v18 v18.8.0
	github.com/nats-io/nats-server/v2 v2.15.2
	github.com/nats-io/nats.go v1.55.0
	github.com/valyala/fastjson v1.6.10
	gonum.org/v1/gonum v0.17.0
)
