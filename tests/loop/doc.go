// Package loop holds the closed-loop integration tests of iotwatch with real
// enforcement points, each measuring the time from the offending log line to
// enforcement:
//
//   - NGINX (loop_test.go): NGINX writes JSON access logs, ship publishes them,
//     the pipeline decides, the forward-auth handler of `iotwatch enforce
//     http` (enforce/forwardauth) answers NGINX's auth_request, and a
//     flooding device gets 403 while the others keep getting 200; the block
//     lifts at its TTL.
//   - Mosquitto (mosquitto_test.go): the broker's own log (log_type all) is
//     shipped, a device that publishes to a privileged command topic it never
//     used is blocked, `iotwatch enforce mosquitto` disables its username
//     through dynamic security, and a real mosquitto_pub with its credentials
//     is refused while the other devices keep publishing.
//   - Both (defaults_test.go, issue 11's "Done when"): one pipeline with the
//     default identity and block scope (auto), an API-key HTTP device behind
//     the real NGINX and an MQTT username on the real Mosquitto, each refused
//     by its own enforcer and acknowledged not_applicable by the other, also
//     with the private ClickHouse stopped; blocks lift at their TTL; a 60 s
//     enforcer outage (NGINX's 500s, in event time) raises no alert.
//
// All seed baselines with synthetic history first: the brokers and gateways
// log wall-clock time, and the detectors need ten minutes of event time.
//
//	go test -run 'TestNginxClosedLoop|TestMosquittoClosedLoop|TestEnforcementLoopDefaults' -v ./tests/loop/
package loop
