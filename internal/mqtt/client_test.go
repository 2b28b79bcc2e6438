package mqtt_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
)

func TestClientAgainstMosquitto(t *testing.T) {
	b := mosquittotest.Start(t)
	b.AddClient(t, "dev-1", "pw-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	got := make(chan string, 10)
	sub, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: "sub", Username: mosquittotest.AdminUser, Password: mosquittotest.AdminPassword,
		OnMessage: func(topic string, payload []byte) { got <- topic + " " + string(payload) }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(ctx, "devices/+/cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	pub, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: "dev-1", Username: "dev-1", Password: "pw-1", KeepAlive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for qos := range byte(2) {
		if err := pub.Publish(ctx, "devices/dev-1/cmd/unlock", []byte{'q', '0' + qos}, qos); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if want := "devices/dev-1/cmd/unlock q" + string('0'+rune(qos)); m != want {
				t.Errorf("received %q; want %q", m, want)
			}
		case <-ctx.Done():
			t.Fatalf("QoS %d message not received\n%s", qos, b.Logs())
		}
	}
	// The keep-alive (1 s) holds the connection open past 1.5 keep-alives.
	select {
	case <-pub.Done():
		t.Fatalf("connection dropped: %v", pub.Err())
	case <-time.After(2 * time.Second):
	}

	_, err = mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: "x", Username: "dev-1", Password: "wrong"})
	var ce *mqtt.ConnectError
	if !errors.As(err, &ce) || ce.Code != 4 && ce.Code != 5 {
		t.Errorf("bad password: %v; want a ConnectError with code 4 or 5", err)
	}
}
