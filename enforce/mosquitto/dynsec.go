package mosquitto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/internal/mqtt"
)

// Mosquitto dynamic-security plugin control topics (Mosquitto 2.0 and later).
const (
	DynSecTopic         = "$CONTROL/dynamic-security/v1"
	DynSecResponseTopic = "$CONTROL/dynamic-security/v1/response"
)

// DynSecCommand is one command of the dynamic-security plugin, such as
// {Command: "disableClient", Username: "dev-17"}. DynSec sets CorrelationData.
type DynSecCommand struct {
	Command         string `json:"command"`
	Username        string `json:"username,omitempty"`
	CorrelationData string `json:"correlationData,omitempty"`
}

// DynSecError is the plugin's refusal of one command.
type DynSecError struct {
	Command, Username, Message string
}

func (e *DynSecError) Error() string {
	return fmt.Sprintf("dynamic-security %s %q: %s", e.Command, e.Username, e.Message)
}

// DynSec sends commands to Mosquitto's dynamic-security plugin over one MQTT
// connection. The connecting user needs the plugin's admin role (publish to
// DynSecTopic, subscribe to DynSecResponseTopic), as `mosquitto_ctrl dynsec
// init` creates. Safe for concurrent use; it does not reconnect (see Done).
type DynSec struct {
	c   *mqtt.Client
	seq atomic.Uint64
	tag string

	mu      sync.Mutex
	pending map[string]chan dynsecResponse
}

type dynsecResponse struct {
	Command         string `json:"command"`
	Error           string `json:"error"`
	CorrelationData string `json:"correlationData"`
}

// DialDynSec connects with o (o.OnMessage is replaced) and subscribes to the
// plugin's responses.
func DialDynSec(ctx context.Context, o mqtt.Options) (*DynSec, error) {
	d := &DynSec{pending: map[string]chan dynsecResponse{}, tag: o.ClientID}
	o.OnMessage = d.onMessage
	c, err := mqtt.Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	d.c = c
	if err := c.Subscribe(ctx, DynSecResponseTopic, 1); err != nil {
		c.Close()
		return nil, err
	}
	return d, nil
}

// Done is closed when the connection ends; Err says why.
func (d *DynSec) Done() <-chan struct{} { return d.c.Done() }

// Err returns why the connection ended, or nil.
func (d *DynSec) Err() error { return d.c.Err() }

// Close closes the connection.
func (d *DynSec) Close() error { return d.c.Close() }

// Exec runs cmds with ExecEach and returns the transport error, or the
// refusals joined with errors.Join.
func (d *DynSec) Exec(ctx context.Context, cmds ...DynSecCommand) error {
	each, err := d.ExecEach(ctx, cmds...)
	if err != nil {
		return err
	}
	return errors.Join(each...)
}

// ExecEach sends cmds in one control message (QoS 0) and waits (bounded by ctx) for
// the plugin's answer to each. It returns one error per command (nil: done;
// a *DynSecError: refused by the plugin), or a non-nil second error when the
// answers could not all be had (some commands may then have been applied).
func (d *DynSec) ExecEach(ctx context.Context, cmds ...DynSecCommand) ([]error, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	waits := make([]chan dynsecResponse, len(cmds))
	cmds = append([]DynSecCommand(nil), cmds...)
	d.mu.Lock()
	for i := range cmds {
		cmds[i].CorrelationData = d.tag + "-" + strconv.FormatUint(d.seq.Add(1), 10)
		waits[i] = make(chan dynsecResponse, 1)
		d.pending[cmds[i].CorrelationData] = waits[i]
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		for _, c := range cmds {
			delete(d.pending, c.CorrelationData)
		}
		d.mu.Unlock()
	}()
	body, err := json.Marshal(struct {
		Commands []DynSecCommand `json:"commands"`
	}{cmds})
	if err != nil {
		return nil, fmt.Errorf("cannot encode dynamic-security commands: %w", err)
	}
	// QoS 0: the plugin's response is the acknowledgement. With QoS 1 the
	// broker's PUBACK goes first and, unless Mosquitto runs with
	// set_tcp_nodelay, Nagle's algorithm holds the response back until the
	// PUBACK is acknowledged (40 ms of delayed ACK on Linux).
	if err := d.c.Publish(ctx, DynSecTopic, body, 0); err != nil {
		return nil, err
	}
	errs := make([]error, len(cmds))
	for i, ch := range waits {
		select {
		case r := <-ch:
			if r.Error != "" {
				errs[i] = &DynSecError{Command: cmds[i].Command, Username: cmds[i].Username, Message: r.Error}
			}
		case <-d.c.Done():
			return nil, fmt.Errorf("cannot run dynamic-security %s: %w", cmds[i].Command, d.c.Err())
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot run dynamic-security %s: no response: %w", cmds[i].Command, ctx.Err())
		}
	}
	return errs, nil
}

// onMessage routes a response to its waiter. Responses to other clients'
// commands (the response topic is shared) are ignored.
func (d *DynSec) onMessage(topic string, payload []byte) {
	if topic != DynSecResponseTopic {
		return
	}
	var msg struct {
		Responses []dynsecResponse `json:"responses"`
	}
	if json.Unmarshal(payload, &msg) != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range msg.Responses {
		if ch := d.pending[r.CorrelationData]; ch != nil {
			select {
			case ch <- r:
			default:
			}
		}
	}
}
