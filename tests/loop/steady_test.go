package loop_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// errSkip from a steadyLoad's send means "this device sits this turn out".
var errSkip = errors.New("skip")

// steadyLoad sends one request per tick, round robin over devices, until
// stopped, and counts what succeeded and what failed: the traffic that must
// keep flowing while other devices are blocked.
type steadyLoad struct {
	ok, failed atomic.Uint64
	mu         sync.Mutex
	errs       []string
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

// startSteady starts the load: every/len(devices) between two sends, so each
// device sends about once per every. A send error after the load is stopped
// does not count.
func startSteady(t *testing.T, ctx context.Context, devices []string, every time.Duration, send func(ctx context.Context, device string) error) *steadyLoad {
	l := &steadyLoad{}
	ctx, l.stop = context.WithCancel(ctx)
	l.wg.Go(func() {
		tick := time.NewTicker(every / time.Duration(len(devices)))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			d := devices[i%len(devices)]
			err := send(ctx, d)
			switch {
			case err == nil:
				l.ok.Add(1)
			case errors.Is(err, errSkip):
			case ctx.Err() != nil:
				return
			default:
				l.failed.Add(1)
				l.mu.Lock()
				l.errs = append(l.errs, fmt.Sprintf("%s: %v", d, err))
				l.mu.Unlock()
			}
		}
	})
	t.Cleanup(l.halt)
	return l
}

// halt stops the load and waits for its last send.
func (l *steadyLoad) halt() { l.stop(); l.wg.Wait() }

// check fails t unless something succeeded and nothing failed; what names a success.
func (l *steadyLoad) check(t *testing.T, who, what string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ok.Load() == 0 || l.failed.Load() != 0 {
		t.Errorf("%s: %d %s, %d not: %v", who, l.ok.Load(), what, l.failed.Load(), l.errs)
	}
}
