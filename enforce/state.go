package enforce

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/iotwatch/iotwatch/schemas"
)

// stateVersion is the version of the state file layout.
const stateVersion = 1

// stateFile is the on-disk cache: every active entry with its KV key,
// revision and the KV value as received (signature included, so it is
// verified again on load).
type stateFile struct {
	V          int          `json:"v"`
	EnforcerID string       `json:"enforcer_id"`
	Revision   uint64       `json:"revision"`
	Entries    []stateEntry `json:"entries"`
	// Revisions are the last decision applied per KV key (absent in files
	// written before revisions existed).
	Revisions []stateRev `json:"revisions,omitempty"`
}

type stateRev struct {
	Key   string `json:"key"`
	Rev   uint64 `json:"rev"`
	ID    string `json:"id"`
	Until int64  `json:"until"`
}

type stateEntry struct {
	Key      string          `json:"key"`
	Revision uint64          `json:"revision"`
	Value    json.RawMessage `json:"value"`
}

// loadState fills the cache from Options.StateFile; a missing file is an
// empty cache. Entries that no longer verify (a retired key) or have expired
// are dropped.
func (c *Client) loadState() error {
	path := c.o.StateFile
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read enforcement state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("cannot decode enforcement state %q: %w", path, err)
	}
	if st.V != stateVersion {
		return fmt.Errorf("cannot load enforcement state %q: version %d, want %d", path, st.V, stateVersion)
	}
	now := c.nowNanos()
	c.stateLoaded = true
	for _, r := range st.Revisions {
		c.revs[r.Key] = keyRev{rev: r.Rev, id: r.ID, until: r.Until}
	}
	for _, se := range st.Entries {
		e, err := c.decode(se.Key, se.Revision, se.Value)
		if err != nil {
			c.log.Warn("enforcement state entry rejected", "path", path, "key", se.Key, "err", err)
			continue
		}
		if e.d.Action == schemas.ActionUnblock {
			continue // never saved: unblocks are not held
		}
		if !e.live(now) {
			c.expire(&e.d)
			continue
		}
		c.entries[se.Key] = e
		if _, ok := c.revs[se.Key]; !ok { // a file from before revisions
			c.record(se.Key, &e.d, e.expires)
		}
	}
	c.revision.Store(st.Revision)
	c.log.Info("enforcement state loaded", "path", path, "active", len(c.entries), "revision", st.Revision)
	return nil
}

// saveState writes the cache to Options.StateFile atomically (a temporary
// file in the same directory, synced, then renamed over it).
func (c *Client) saveState() error {
	st := stateFile{V: stateVersion, EnforcerID: c.o.EnforcerID, Revision: c.revision.Load(), Entries: make([]stateEntry, 0, len(c.entries))}
	for _, e := range c.entries {
		st.Entries = append(st.Entries, stateEntry{Key: e.key, Revision: e.revision, Value: e.raw})
	}
	for key, r := range c.revs {
		st.Revisions = append(st.Revisions, stateRev{Key: key, Rev: r.rev, ID: r.id, Until: r.until})
	}
	data, err := json.Marshal(&st)
	if err != nil {
		return fmt.Errorf("cannot encode enforcement state: %w", err)
	}
	path := c.o.StateFile
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot write enforcement state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cannot write enforcement state %q: %w", path, err)
	}
	return nil
}
