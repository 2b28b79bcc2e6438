package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/iotwatch/iotwatch/detectors"
)

// Dir returns the directory of the package that declares s's detector type
// (the type s.New returns): the detector's package, whose golden scenarios
// are Dir/testdata/*.txt. The registry is all it needs, so a test can find
// every registered detector's scenarios without a list to edit. It works in
// tests, which run inside the module's source tree: it finds the module root
// by walking up from the working directory to go.mod.
func Dir(s detectors.Spec) (string, error) {
	t := reflect.TypeOf(s.New())
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.PkgPath() == "" {
		return "", fmt.Errorf("cannot locate detector %q: New returns no named type", s.Name)
	}
	root, module, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("cannot locate detector %q: %w", s.Name, err)
	}
	rel, ok := strings.CutPrefix(t.PkgPath(), module)
	if !ok || (rel != "" && rel[0] != '/') {
		return "", fmt.Errorf("cannot locate detector %q: its package %q is not in module %q", s.Name, t.PkgPath(), module)
	}
	return filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(rel, "/"))), nil
}

// moduleRoot returns the directory holding go.mod, at or above the working
// directory, and the module path it declares.
func moduleRoot() (dir, module string, err error) {
	dir, err = os.Getwd()
	if err != nil {
		return "", "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(m), `"`), nil
				}
			}
			return "", "", fmt.Errorf("cannot find the module path in %s", filepath.Join(dir, "go.mod"))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", fmt.Errorf("cannot find go.mod above the working directory")
		}
		dir = parent
	}
}
