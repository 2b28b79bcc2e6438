package sink

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/schemas"
)

// readmes are the documents whose ```sql blocks analysts copy.
var readmes = []string{"../../README.md", "../../deploy/README.md"}

// sqlStatements returns the statements of the ```sql blocks of a Markdown
// file, and fails the test on a fenced block that is not marked sql but
// queries the iotwatch tables (it would escape this test).
func sqlStatements(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stmts []string
	var cur strings.Builder
	fence, lang, line := false, "", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line++
		text := sc.Text()
		if trimmed := strings.TrimSpace(text); strings.HasPrefix(trimmed, "```") {
			if !fence {
				fence, lang = true, strings.TrimPrefix(trimmed, "```")
			} else {
				fence = false
			}
			continue
		}
		if !fence {
			continue
		}
		if lang != "sql" {
			if strings.Contains(text, "SELECT ") && strings.Contains(text, "FROM iotwatch.") {
				t.Errorf("%s:%d: a query in a ```%s block: mark the block ```sql so that this test runs it", path, line, lang)
			}
			continue
		}
		if c := strings.Index(text, "--"); c >= 0 {
			text = text[:c]
		}
		for {
			i := strings.IndexByte(text, ';')
			if i < 0 {
				break
			}
			cur.WriteString(text[:i])
			if s := strings.TrimSpace(cur.String()); s != "" {
				stmts = append(stmts, s)
			}
			cur.Reset()
			text = text[i+1:]
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		t.Errorf("%s: a statement without its ';': %q", path, s)
	}
	return stmts
}

// TestReadmeQueries runs every statement of the READMEs' ```sql blocks
// against the real ClickHouse, on tables migrated by the writer and holding a
// few rows of each kind (events with identifiers, an enumeration alert, a
// block and its unblock). Any error fails the test.
func TestReadmeQueries(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{Database: "iotwatch"}) // the database the READMEs name
	readmeQueries(t, c)
}

// readmeQueries writes a few rows of each kind with c, whose database is
// iotwatch, then runs the READMEs' statements on them.
func readmeQueries(t *testing.T, c *ClickHouse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec := testRecord(t, 40)
	defer rec.Release()
	if err := c.WriteScored(ctx, rec); err != nil {
		t.Fatal(err)
	}
	alerts := testCHAlerts()
	now := time.Now().UTC()
	alerts = append(alerts, schemas.Alert{ID: "al-enum", Time: now, Tenant: "acme", Device: "dev-0000", Score: 0.95,
		Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: command.Name, Reason: command.ReasonEnumeration, Score: 0.95}}})
	if err := c.WriteAlerts(ctx, alerts); err != nil {
		t.Fatal(err)
	}
	decisions := testCHDecisions()
	decisions = append(decisions, schemas.Decision{ID: schemas.UnblockID(decisions[0].ID), Action: schemas.ActionUnblock,
		Scope: decisions[0].Scope, Value: decisions[0].Value, CreatedAt: now, Reason: schemas.ReasonAnalystUnblock + ": ticket 1", Issuer: "analyst/alice"})
	if err := c.WriteDecisions(ctx, decisions); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range readmes {
		for _, stmt := range sqlStatements(t, path) {
			n++
			rows, err := c.conn.Query(ctx, stmt)
			if err != nil {
				t.Errorf("%s: %v\n%s", path, err, stmt)
				continue
			}
			for rows.Next() {
			}
			if err := rows.Err(); err != nil {
				t.Errorf("%s: %v\n%s", path, err, stmt)
			}
			rows.Close()
		}
	}
	if n < 8 {
		t.Errorf("%d statements in the READMEs' sql blocks; the README has at least 8", n)
	}
}
