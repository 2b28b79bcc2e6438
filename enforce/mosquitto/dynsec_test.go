package mosquitto

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
)

func TestDynSecDisableEnable(t *testing.T) {
	b := mosquittotest.Start(t)
	b.AddClient(t, "dev-2", "pw-2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ds, err := DialDynSec(ctx, mqtt.Options{Addr: b.Addr, ClientID: "enforcer", Username: mosquittotest.AdminUser, Password: mosquittotest.AdminPassword})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()

	// A connected device is kicked by disableClient.
	dev, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: "dev-2", Username: "dev-2", Password: "pw-2"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := ds.Exec(ctx, DynSecCommand{Command: "disableClient", Username: "dev-2"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dev.Done():
	case <-ctx.Done():
		t.Fatal("disabled device was not disconnected")
	}
	if out, err := b.Pub(t, "dev-2", "pw-2", "devices/dev-2/state", "x"); err == nil {
		t.Fatalf("mosquitto_pub of a disabled client succeeded: %s", out)
	}
	if err := ds.Exec(ctx, DynSecCommand{Command: "enableClient", Username: "dev-2"}); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Pub(t, "dev-2", "pw-2", "devices/dev-2/state", "x"); err != nil {
		t.Fatalf("mosquitto_pub of a re-enabled client: %v: %s", err, out)
	}
	err = ds.Exec(ctx, DynSecCommand{Command: "disableClient", Username: "nobody"}, DynSecCommand{Command: "enableClient", Username: "dev-2"})
	var de *DynSecError
	if !errors.As(err, &de) || de.Username != "nobody" {
		t.Errorf("disableClient of an unknown user: %v; want a DynSecError for %q", err, "nobody")
	}
}
