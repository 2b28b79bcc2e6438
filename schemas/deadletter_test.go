package schemas

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Every dead-letter reason is a DeadLetter* constant of deadletter.go, with a
// distinct snake_case value.
func TestDeadLetterReasons(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "deadletter.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	seen := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "DeadLetter") {
					t.Errorf("constant %s in deadletter.go: want the prefix DeadLetter", n.Name)
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s is not a string literal", n.Name)
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				if !snake.MatchString(v) {
					t.Errorf("%s = %q: want snake_case", n.Name, v)
				}
				if other, dup := seen[v]; dup {
					t.Errorf("%s and %s are both %q", n.Name, other, v)
				}
				seen[v] = n.Name
			}
		}
	}
	if len(seen) < 14 {
		t.Errorf("found %d dead-letter reasons, want at least 14", len(seen))
	}
}
