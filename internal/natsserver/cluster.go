package natsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ModulePath is the module of the real nats-server, built at the version
// go.mod requires (ModuleVersion) for the cluster tests.
const ModulePath = "github.com/nats-io/nats-server/v2"

// ModuleBinaryEnv names the variable that points at the nats-server built from
// ModulePath at the go.mod version (the Makefile sets it: make nats-server).
const ModuleBinaryEnv = "IOTWATCH_NATS_SERVER_MODULE"

// ModuleVersion returns the version of ModulePath go.mod requires, such as
// "v2.15.2": from this binary's build information, else (test binaries
// record no dependencies) from `go list -m` in the working directory.
func ModuleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == ModulePath {
				if d.Replace != nil {
					d = d.Replace
				}
				return d.Version
			}
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", ModulePath).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// ModuleBinaryPath is where `make nats-server` builds the nats-server of
// ModuleVersion: $HOME/.cache/iotwatch/nats-server-<version>.
func ModuleBinaryPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "iotwatch", "nats-server-"+ModuleVersion())
}

// FindModuleBinary returns the nats-server built from the module at the
// version in go.mod: $IOTWATCH_NATS_SERVER_MODULE, else ModuleBinaryPath.
// Debian's nats-server (FindBinary) is 2.9; clusters, consumer priority
// groups and per-key TTL are tested against this one. Its error says how to
// build it.
func FindModuleBinary() (string, error) {
	p := os.Getenv(ModuleBinaryEnv)
	if p == "" {
		p = ModuleBinaryPath()
	}
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("cannot find nats-server %s at %q: run `make nats-server` in the repository "+
			"(it runs go build -o %s %s), or point %s at a nats-server %s binary",
			ModuleVersion(), p, ModuleBinaryPath(), ModulePath, ModuleBinaryEnv, ModuleVersion())
	}
	return p, nil
}

// ClusterOptions configures StartCluster. The zero value is valid.
type ClusterOptions struct {
	// Binary is the nats-server executable. Empty: FindModuleBinary.
	Binary string
	// Dir holds each node's store and configuration. Required.
	Dir string
	// Nodes is the cluster size; 0 means 3.
	Nodes int
}

// clusterNode is one node's fixed identity: a restart keeps its name,
// ports and store, as a restarted server on the same host would.
type clusterNode struct {
	name     string
	port     int // client
	http     int // monitoring (/jsz)
	conf     string
	storeDir string
	proc     *Process // nil while killed
}

// Cluster is a JetStream cluster of nats-server processes on 127.0.0.1, each
// with its own store, routes to every other and a monitoring port.
type Cluster struct {
	bin   string
	nodes []*clusterNode
}

// clusterReadyTimeout bounds how long StartCluster and Restart wait for a
// meta leader and every peer to be current: generous, for a busy machine.
const clusterReadyTimeout = 60 * time.Second

// clusterStartAttempts is how many times StartCluster forms a cluster from
// fresh stores and ports before it gives up. One attempt in CI (stop 21)
// had a meta leader that saw one of its two peers as current for a whole
// minute after a simultaneous start; a fresh start forms in about a second.
const clusterStartAttempts = 3

// StartCluster starts o.Nodes nodes and returns once the JetStream meta
// group has a leader that every node knows and every peer is current, or
// fails with the nodes' output (all of them stopped). A cluster that does not
// form within clusterReadyTimeout is stopped and started again from fresh
// stores and ports, up to clusterStartAttempts times in all.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("cannot start a nats-server cluster: no directory")
	}
	var errs []error
	for attempt := 1; attempt <= clusterStartAttempts; attempt++ {
		ao := o
		ao.Dir = filepath.Join(o.Dir, fmt.Sprintf("attempt%d", attempt))
		c, err := startCluster(ao)
		if err == nil {
			return c, nil
		}
		var nf *notFormedError
		if !errors.As(err, &nf) {
			return nil, err
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
	}
	return nil, errors.Join(errs...)
}

// notFormedError is a cluster whose nodes started but did not form.
type notFormedError struct{ err error }

func (e *notFormedError) Error() string { return e.err.Error() }
func (e *notFormedError) Unwrap() error { return e.err }

func startCluster(o ClusterOptions) (*Cluster, error) {
	n := o.Nodes
	if n == 0 {
		n = 3
	}
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = FindModuleBinary(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{bin: bin}
	routes := make([]string, n)
	clusterPorts := make([]int, n)
	for i := range n {
		var ports [3]int
		for j := range ports {
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			ports[j] = p
		}
		clusterPorts[i] = ports[2]
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[2])
		c.nodes = append(c.nodes, &clusterNode{name: fmt.Sprintf("n%d", i+1), port: ports[0], http: ports[1],
			storeDir: filepath.Join(o.Dir, fmt.Sprintf("n%d", i+1), "js")})
	}
	for i, nd := range c.nodes {
		if err := os.MkdirAll(nd.storeDir, 0o755); err != nil {
			return nil, fmt.Errorf("cannot create store of %s: %w", nd.name, err)
		}
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, strconv.Quote(r))
			}
		}
		// JetStream and its store come from the command line (StartProcess).
		conf := fmt.Sprintf("server_name: %q\nhttp: \"127.0.0.1:%d\"\n"+
			"cluster {\n  name: \"iotwatch-test\"\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n",
			nd.name, nd.http, clusterPorts[i], strings.Join(others, ", "))
		nd.conf = filepath.Join(o.Dir, nd.name, "server.conf")
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("cannot write configuration of %s: %w", nd.name, err)
		}
	}
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitReady(clusterReadyTimeout); err != nil {
		out := c.Output()
		c.Stop()
		return nil, &notFormedError{fmt.Errorf("%w\n%s", err, out)}
	}
	return c, nil
}

func (c *Cluster) start(i int) error {
	nd := c.nodes[i]
	p, err := StartProcess(ProcessOptions{Binary: c.bin, Config: nd.conf, StoreDir: nd.storeDir, Port: nd.port})
	if err != nil {
		return fmt.Errorf("cannot start cluster node %s: %w", nd.name, err)
	}
	nd.proc = p
	return nil
}

// Size returns the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// Name returns node i's server name (n1, n2, ...), as stream and consumer
// info name their leader.
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// NodeURL returns node i's client URL.
func (c *Cluster) NodeURL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].port) }

// URL returns every node's client URL, comma-separated, for nats.Connect:
// a client fails over to the others when its node dies.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// Kill kills node i with SIGKILL (no clean shutdown) and waits for it to exit.
func (c *Cluster) Kill(i int) {
	if p := c.nodes[i].proc; p != nil {
		p.Stop()
		c.nodes[i].proc = nil
	}
}

// Restart starts the killed node i again on its ports and store, and waits
// until the cluster is ready again (WaitReady).
func (c *Cluster) Restart(i int) error {
	if c.nodes[i].proc != nil {
		return fmt.Errorf("cannot restart %s: it is running", c.nodes[i].name)
	}
	if err := c.start(i); err != nil {
		return err
	}
	return c.WaitReady(clusterReadyTimeout)
}

// Stop kills every node. It is safe to call twice.
func (c *Cluster) Stop() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// Output returns what every running node has logged so far, node by node.
func (c *Cluster) Output() string {
	var b strings.Builder
	for _, nd := range c.nodes {
		if nd.proc != nil {
			fmt.Fprintf(&b, "=== %s\n%s", nd.name, nd.proc.Output())
		}
	}
	return b.String()
}

// jsz is the part of a node's /jsz monitoring answer WaitReady reads.
type jsz struct {
	Meta *struct {
		Leader   string `json:"leader"`
		Size     int    `json:"cluster_size"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// WaitReady polls every running node's /jsz until each names the same meta
// leader and that leader sees every other node as a current peer, for at
// most timeout.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	var why string
	for {
		if why = c.notReady(client); why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot form the nats-server cluster within %s: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for work
	}
}

// notReady returns why the cluster is not ready, or "".
func (c *Cluster) notReady(client *http.Client) string {
	leader := ""
	for _, nd := range c.nodes {
		if nd.proc == nil {
			continue
		}
		j, err := nodeJsz(client, nd.http)
		if err != nil {
			return fmt.Sprintf("%s: %v", nd.name, err)
		}
		if j.Meta == nil || j.Meta.Leader == "" {
			return nd.name + " knows no meta leader"
		}
		if leader != "" && j.Meta.Leader != leader {
			return fmt.Sprintf("%s names meta leader %s, another node %s", nd.name, j.Meta.Leader, leader)
		}
		leader = j.Meta.Leader
		if j.Meta.Leader == nd.name {
			current := 0
			var seen []string
			for _, r := range j.Meta.Replicas {
				if r.Current && !r.Offline {
					current++
				}
				seen = append(seen, fmt.Sprintf("%s current=%t offline=%t", r.Name, r.Current, r.Offline))
			}
			if current != c.running()-1 {
				return fmt.Sprintf("meta leader %s sees %d current peers of %d (%s)", nd.name, current, c.running()-1,
					strings.Join(seen, ", "))
			}
		}
	}
	if leader == "" {
		return "no node is running"
	}
	return ""
}

func (c *Cluster) running() int {
	n := 0
	for _, nd := range c.nodes {
		if nd.proc != nil {
			n++
		}
	}
	return n
}

func nodeJsz(client *http.Client, port int) (*jsz, error) {
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j jsz
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		return nil, fmt.Errorf("cannot decode /jsz: %w", err)
	}
	return &j, nil
}

// StreamLeader returns the index of the node that leads stream name, asking
// through nc, or an error when it has none (an election in progress).
func (c *Cluster) StreamLeader(ctx context.Context, nc *nats.Conn, name string) (int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return -1, fmt.Errorf("cannot open JetStream: %w", err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		return -1, fmt.Errorf("cannot read stream %q: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1, fmt.Errorf("cannot read stream %q: %w", name, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("stream %q has no leader", name)
	}
	for i, nd := range c.nodes {
		if nd.name == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("stream %q is led by %q, not a node of this cluster", name, info.Cluster.Leader)
}
