// Package loop holds the closed-loop integration test of iotwatch with a real
// NGINX (loop_test.go): NGINX writes JSON access logs, ship publishes them,
// the pipeline decides, an enforcement endpoint answers NGINX's auth_request,
// and a flooding device gets 403 while the others keep getting 200. The test
// also measures the time from the offending log line to enforcement:
//
//	go test -run TestNginxClosedLoop -v ./bench/loop/
package loop
