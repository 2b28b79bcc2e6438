package ship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/schemas"
)

const testTimeout = 20 * time.Second

// streamLines returns every line stored in IOTWATCH_LOGS, in stream order.
func streamLines(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatalf("cannot get stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("cannot get stream info: %v", err)
	}
	var lines []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("cannot get message %d: %v", seq, err)
		}
		if m.Subject != testSubject {
			t.Fatalf("message %d on %q, want %q", seq, m.Subject, testSubject)
		}
		lines = append(lines, strings.Split(strings.TrimSuffix(string(m.Data), "\n"), "\n")...)
	}
	return lines
}

const testSubject = "iotwatch.logs.json.test"

func testConfig(inputs ...string) Config {
	c := DefaultConfig()
	c.Inputs = inputs
	c.Subject = testSubject
	c.Lines = 7
	c.Poll = 5 * time.Millisecond
	c.RotateWait = 100 * time.Millisecond
	c.Checkpoint = 5 * time.Millisecond
	c.Log = slog.New(slog.DiscardHandler)
	return c
}

func genLines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, `{"n":%d,"pad":"%s"}`+"\n", i, strings.Repeat("x", i%13))
	}
	return b.String()
}

func writeFile(t *testing.T, path, s string, flag int) {
	t.Helper()
	f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// wantExactlyOnce checks that got holds every line of want exactly once;
// ordered also checks the order.
func wantExactlyOnce(t *testing.T, got []string, want string, ordered bool) {
	t.Helper()
	w := strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	if ordered {
		if strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Fatalf("stream holds %d lines, want %d in file order; first difference at %d", len(got), len(w), firstDiff(got, w))
		}
		return
	}
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
	}
	for _, l := range w {
		switch seen[l] {
		case 0:
			t.Errorf("line lost: %s", l)
		case 1:
		default:
			t.Errorf("line stored %d times: %s", seen[l], l)
		}
		delete(seen, l)
	}
	for l := range seen {
		t.Errorf("unexpected line: %q", l)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// runInBackground runs Run in a goroutine until the returned stop is called;
// stop returns Run's error.
func runInBackground(js jetstream.JetStream, cfg Config, st *Stats) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, js, cfg, st) }()
	return func() error {
		cancel()
		return <-errc
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, not waiting for work
	}
}

func TestShipFileOnce(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	content := genLines(0, 1000) + `{"n":"last, no newline"}`
	writeFile(t, path, content, os.O_TRUNC)
	cfg := testConfig(path)
	cfg.Follow = false
	cfg.StateFile = filepath.Join(dir, "state")
	var progress bytes.Buffer
	cfg.ProgressOut = &progress
	var st Stats
	if err := Run(context.Background(), js, cfg, &st); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, streamLines(t, js), content, true)
	if got, want := st.Messages.Load(), uint64(1001+6)/7; got != want {
		t.Errorf("messages = %d, want %d (7 lines each)", got, want)
	}
	if st.Lines.Load() != 1001 || st.Acked.Load() != st.Messages.Load() || st.Pending.Load() != 0 {
		t.Errorf("lines %d acked %d pending %d", st.Lines.Load(), st.Acked.Load(), st.Pending.Load())
	}
	files, err := loadState(cfg.StateFile)
	if err != nil || len(files) != 1 || files[0].Offset != int64(len(content)) || len(files[0].Planned) != 0 {
		t.Fatalf("state = %+v, %v; want offset %d, nothing planned", files, err, len(content))
	}
	if !strings.Contains(progress.String(), "ship: done lines=1001 messages=143") {
		t.Errorf("summary = %q", progress.String())
	}
	// Shipping again with the state sends nothing.
	st = Stats{}
	if err := Run(context.Background(), js, cfg, &st); err != nil {
		t.Fatal(err)
	}
	if st.Messages.Load() != 0 {
		t.Errorf("second run sent %d messages, want 0", st.Messages.Load())
	}
}

func TestMaxBytesAndOverlongLines(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	long := strings.Repeat("L", 3000)
	huge := strings.Repeat("H", 9000)
	writeFile(t, path, "a\nb\n"+long+"\nc\n"+huge+"\nd\n", os.O_TRUNC)
	cfg := testConfig(path)
	cfg.Follow, cfg.Lines, cfg.MaxBytes, cfg.MaxLine, cfg.MaxPendingBytes = false, 100, 1000, 5000, 1<<20
	var st Stats
	if err := Run(context.Background(), js, cfg, &st); err != nil {
		t.Fatal(err)
	}
	got := streamLines(t, js)
	want := []string{"a", "b", long, "c", huge[:5000], "d"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %d lines %.60q..., want a, b, the long line alone, c, the huge line cut to 5000, d", len(got), got)
	}
	if st.Messages.Load() != 5 || st.Truncated.Load() != 1 {
		t.Errorf("messages %d truncated %d, want 5 and 1", st.Messages.Load(), st.Truncated.Load())
	}
}

func TestFollowAppendRotateTruncate(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	all := genLines(0, 100)
	writeFile(t, path, all, os.O_TRUNC)
	cfg := testConfig(path)
	cfg.StateFile = filepath.Join(dir, "state")
	var st Stats
	stop := runInBackground(js, cfg, &st)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	waitLines := func(n uint64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d lines acked", n), func() bool { return st.Lines.Load() >= n && st.Pending.Load() == 0 })
	}
	waitLines(100)

	// Append, including a partial line completed later.
	writeFile(t, path, genLines(100, 150)+`{"n":"par`, os.O_APPEND)
	waitLines(150)
	writeFile(t, path, `tial"}`+"\n", os.O_APPEND)
	all += genLines(100, 150) + `{"n":"partial"}` + "\n"
	waitLines(151)

	// Rotate: rename, the writer still appends to the old file a little, a new file appears.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, genLines(200, 230), os.O_TRUNC)
	waitFor(t, "rotation", func() bool { return st.Rotations.Load() == 1 })
	writeFile(t, path+".1", genLines(150, 160), os.O_APPEND) // late write to the rotated file
	all += genLines(150, 160) + genLines(200, 230)
	waitLines(151 + 40)

	// Truncate (copytruncate) and write less than before.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, genLines(300, 305), os.O_APPEND)
	all += genLines(300, 305)
	waitLines(151 + 45)
	// Truncate and quickly write more than before: the first line changed.
	if err := os.WriteFile(path, []byte(genLines(400, 460)), 0o644); err != nil {
		t.Fatal(err)
	}
	all += genLines(400, 460)
	waitLines(151 + 45 + 60)
	if st.Truncations.Load() != 2 {
		t.Errorf("truncations = %d, want 2", st.Truncations.Load())
	}
	wantExactlyOnce(t, streamLines(t, js), all, false)
	if st.Duplicates.Load() != 0 {
		t.Errorf("%d duplicates; new data was mistaken for old", st.Duplicates.Load())
	}
}

// crashingJS publishes through a real connection until its after-th publish
// or, when want is set, the first publish from then on at which the state
// file satisfies want (how far acks and checkpoints have come depends on the
// machine's speed); it saves the state file as it is at that moment (what a
// crash right after that publish would leave) and refuses every later publish.
type crashingJS struct {
	jetstream.JetStream
	after, n  int
	stateFile string
	want      func([]*fileState) bool
	snapshot  []byte
}

func (c *crashingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	c.n++
	if c.snapshot != nil {
		return nil, errors.New("crashed")
	}
	if c.n >= c.after {
		// Run's goroutine, which calls this, writes the state: the file
		// read here is the one loadState checked.
		if files, err := loadState(c.stateFile); c.want == nil || (err == nil && c.want(files)) {
			c.snapshot, _ = os.ReadFile(c.stateFile)
		}
	}
	return c.JetStream.PublishMsgAsync(m, opts...)
}

// inFlight reports whether a state has acked data and at least two messages
// in flight.
func inFlight(files []*fileState) bool {
	return len(files) == 1 && files[0].Offset > 0 && len(files[0].Planned) >= 2
}

// TestRestartNoLossNoDuplicates crashes ship after some publishes, with
// messages in flight and acks not yet checkpointed, appends to the file and
// restarts with more lines per message; that restart crashes too after one
// publish, and a third run finishes. Every line must be stored once.
func TestRestartNoLossNoDuplicates(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	content := genLines(0, 20000)
	writeFile(t, path, content, os.O_TRUNC)
	cfg := testConfig(path)
	cfg.StateFile = filepath.Join(dir, "state")
	cfg.MaxPending = 8
	crash := &crashingJS{JetStream: js, after: 300, stateFile: cfg.StateFile, want: inFlight}
	var st Stats
	if err := Run(context.Background(), crash, cfg, &st); err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Fatalf("first run: %v, want the injected crash", err)
	}
	files, err := loadState(cfg.StateFile)
	if err != nil || len(files) != 1 {
		t.Fatalf("state after the crash: %+v, %v", files, err)
	}
	if err := os.WriteFile(cfg.StateFile, crash.snapshot, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err = loadState(cfg.StateFile)
	if err != nil || !inFlight(files) {
		t.Fatalf("state at the crash: %+v, %v; want acked data and messages in flight", files, err)
	}
	// The file grows meanwhile and the restart packs more lines per message:
	// without the planned cuts it would cut its first messages differently,
	// their ids would not match and their lines would be stored twice.
	more := genLines(20000, 20500)
	writeFile(t, path, more, os.O_APPEND)
	cfg.Follow = false
	cfg.MaxPending = 1024
	cfg.Lines = 11
	// A second crash while the restart is still re-sending the first plan.
	crash2 := &crashingJS{JetStream: js, after: 1, stateFile: cfg.StateFile}
	if err := Run(context.Background(), crash2, cfg, nil); err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Fatalf("second run: %v, want the injected crash", err)
	}
	if err := os.WriteFile(cfg.StateFile, crash2.snapshot, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Lines = 13
	st2 := Stats{}
	if err := Run(context.Background(), js, cfg, &st2); err != nil {
		t.Fatal(err)
	}
	if st2.Duplicates.Load() == 0 {
		t.Errorf("the restart re-sent nothing already stored; the crash left nothing in flight")
	}
	wantExactlyOnce(t, streamLines(t, js), content+more, true)
	t.Logf("first run %d lines, restart %d lines with %d duplicates dropped", st.Lines.Load(), st2.Lines.Load(), st2.Duplicates.Load())
}

func TestRestartFindsRotatedFile(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	writeFile(t, path, genLines(0, 50), os.O_TRUNC)
	cfg := testConfig(path)
	cfg.Follow = false
	cfg.StateFile = filepath.Join(dir, "state")
	if err := Run(context.Background(), js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	// While ship is down the file gets more lines, then is rotated.
	writeFile(t, path, genLines(50, 60), os.O_APPEND)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, genLines(60, 70), os.O_TRUNC)
	cfg.Follow = true
	var st Stats
	stop := runInBackground(js, cfg, &st)
	waitFor(t, "20 lines acked", func() bool { return st.Lines.Load() >= 20 && st.Pending.Load() == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, streamLines(t, js), genLines(0, 70), false)
}

func TestStdin(t *testing.T) {
	js := natstest.Start(t, natsserver.Options{}).JS
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	content := genLines(0, 300)
	cfg := testConfig(Stdin)
	cfg.Stdin = r
	var st Stats
	errc := make(chan error, 1)
	go func() { errc <- Run(context.Background(), js, cfg, &st) }()
	// A slow writer: its lines are shipped as they come, not when a buffer fills.
	w.WriteString(genLines(0, 10))
	waitFor(t, "10 lines acked while stdin is open", func() bool { return st.Acked.Load() == 2 })
	w.WriteString(genLines(10, 300))
	w.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, streamLines(t, js), content, true)
}

func TestCut(t *testing.T) {
	c := cutter{lines: 3, maxBytes: 10, maxLine: 20}
	f := func(in string, final bool, want ...string) {
		t.Helper()
		r := &reader{buf: []byte(in)}
		var got []string
		for {
			skipping := r.skip
			d, _, end, _, ok := r.next(c, final, false)
			if !ok {
				if skipping && !r.skip {
					continue
				}
				break
			}
			if end != r.off {
				t.Fatalf("end %d, offset %d", end, r.off)
			}
			got = append(got, string(d))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("cut(%q, final=%v) = %q, want %q", in, final, got, want)
		}
	}
	f("a\nb\nc\nd\n", false, "a\nb\nc\n", "d\n")
	f("a\nb\npartial", false, "a\nb\n")
	f("a\nb\npartial", true, "a\nb\n", "partial")
	f("abcd\nefgh\nij\n", false, "abcd\nefgh\n", "ij\n")
	f("a\n0123456789abc\nb\n", false, "a\n", "0123456789abc\n", "b\n")
	f("a\n0123456789abcdefghijklm\nb\n", false, "a\n", "0123456789abcdefghij", "b\n")
	f("0123456789abcdefghijklmnop", false, "0123456789abcdefghij")
	f("", true)
}

// TestGiveUp: with GiveUp, a server that stops answering makes Run fail with
// a *GiveUpError instead of retrying forever.
func TestGiveUp(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	writeFile(t, path, genLines(0, 100), os.O_TRUNC)
	env.Server.Shutdown()
	cfg := testConfig(path)
	cfg.Follow = false
	cfg.StateFile = filepath.Join(dir, "state")
	cfg.GiveUp = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout) // a bound on a hang
	defer cancel()
	err := Run(ctx, env.JS, cfg, nil)
	ge, ok := errors.AsType[*GiveUpError](err)
	if !ok || ge.Tries < 1 || !strings.Contains(err.Error(), "no acknowledgement") || ctx.Err() != nil {
		t.Fatalf("Run against a stopped server: %v; want a *GiveUpError before the test's deadline", err)
	}
}
