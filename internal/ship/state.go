package ship

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateVersion is the version of the state file format; a file of another
// version is ignored (every input restarts from its beginning, and message
// ids then make the re-sent part a duplicate the stream drops).
const stateVersion = 1

// fileState is the checkpoint of one followed file, identified by device,
// inode, the fingerprint of its first line and its truncation generation.
type fileState struct {
	Path string `json:"path"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	FP   string `json:"fp"`
	Gen  uint32 `json:"gen"`
	// Offset is the end of the last byte range the server acknowledged:
	// everything before it is stored in the stream.
	Offset int64 `json:"offset"`
	// Planned are the end offsets of messages published (or about to be)
	// after Offset and not yet acknowledged, in order. A restart cuts its
	// first messages at exactly these ends, so that their message ids match
	// and the stream drops the copies it already holds.
	Planned []int64 `json:"planned,omitempty"`
	// Retired is set once the path names another file (rotation); the file
	// is looked up by inode in the same directory on restart.
	Retired bool `json:"retired,omitempty"`
}

type stateFile struct {
	Version int          `json:"version"`
	Files   []*fileState `json:"files"`
}

// loadState reads the state file at path; a missing file is an empty state.
func loadState(path string) ([]*fileState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read state file %q: %w", path, err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cannot parse state file %q: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, nil
	}
	return s.Files, nil
}

// saveState writes the state atomically: a temporary file in the same
// directory, then a rename. It does not fsync: a process crash never loses
// the file, a power loss may bring back an older checkpoint, which re-sends
// (never skips) data.
func saveState(path string, files []*fileState) error {
	b, err := json.Marshal(stateFile{Version: stateVersion, Files: files})
	if err != nil {
		return fmt.Errorf("cannot encode state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
				err = os.WriteFile(tmp, b, 0o644)
				if err == nil {
					return rename(tmp, path)
				}
			}
		}
		return fmt.Errorf("cannot write state file %q: %w", tmp, err)
	}
	return rename(tmp, path)
}

func rename(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot replace state file %q: %w", path, err)
	}
	return nil
}
