// Package plot draws what 'iotwatch eval attacks --plot DIR' shows: attacked
// devices' request volume against the volume detector's expected band, one
// normal device's, and the fleet's score distribution, as PNG files.
//
// Importing the package registers its plotter with package eval
// (eval.RegisterPlotter); it is the one package that links gonum.org/v1/plot
// and its fonts and writers, so that a binary that does not import it stays
// free of them.
package plot

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/schemas"
)

func init() {
	eval.RegisterPlotter(func(fc sim.Config, labels []sim.Label, model *detectors.ClassModel) (eval.Plotter, error) {
		return newPlotRecorder(fc, labels, model)
	})
}

// scoreBins is the number of bins of the score histogram over [0, 1].
const scoreBins = 50

// bandCarry is how many minutes without a volume finding the band holds its
// last expected value before it breaks.
const bandCarry = 15

// normalPlot is the plot kind of the one device without an attack.
const normalPlot = "normal"

// plotRecorder collects what `eval attacks --plot` draws while the events
// stream by: per plotted device, requests per minute, the volume detector's
// expected count and the alert times; for the fleet, a histogram of combined
// scores. Its memory is bounded by the run's minutes times the few plotted
// devices.
type plotRecorder struct {
	start   int64 // event time of the run's start, Unix ns
	minutes int
	victims map[string]bool
	devs    map[string]*devicePlot
	order   []*devicePlot
	normal  bool // the normal device is chosen
	vol     detectors.Spec
	fleet   detectors.Fleet // the worker's volume detector's view, read-only
	scores  [scoreBins]float64
	events  int
}

// devicePlot is one plotted device.
type devicePlot struct {
	device string
	kind   string     // the attack type, or normalPlot
	label  *sim.Label // nil for the normal device
	count  []float64  // requests per minute
	// expected is the volume detector's expected request count per minute:
	// the Expected of the minute's last finding without a reason (a
	// short-window count, scaled to a minute); NaN where there is none.
	expected []float64
	alerts   []float64 // alert times, minutes since the start
	// state is a shadow copy of the volume detector's record for this device:
	// the worker keeps only findings with a reason, and the band needs the
	// detector's Expected at every event. The detector is deterministic and
	// sees the same events and fleet view, so the shadow's record is the
	// worker's.
	state []byte
	det   detectors.Detector
}

func newPlotRecorder(fc sim.Config, labels []sim.Label, model *detectors.ClassModel) (*plotRecorder, error) {
	spec, ok := detectors.Lookup(volume.Name)
	if !ok {
		return nil, fmt.Errorf("cannot plot volume: detector %q is not registered", volume.Name)
	}
	r := &plotRecorder{start: fc.Start.UnixNano(), minutes: int(math.Ceil(fc.Duration.Minutes())) + 1,
		victims: map[string]bool{}, devs: map[string]*devicePlot{}, vol: spec, fleet: model.FleetOf(spec.Name)}
	if r.fleet == nil { // volume is not enabled: its shadow learns no class statistics
		r.fleet = model.Table
	}
	for i := range labels {
		r.victims[labels[i].Device] = true
	}
	// The first attack of each type (labels come in sim.AttackTypes order).
	for i := range labels {
		l := &labels[i]
		if r.hasKind(l.Type) || r.devs[l.Device] != nil {
			continue
		}
		r.add(l.Device, l.Type, l)
	}
	return r, nil
}

func (r *plotRecorder) hasKind(kind string) bool {
	for _, d := range r.order {
		if d.kind == kind {
			return true
		}
	}
	return false
}

func (r *plotRecorder) add(device, kind string, l *sim.Label) *devicePlot {
	d := &devicePlot{device: device, kind: kind, label: l, count: make([]float64, r.minutes),
		expected: make([]float64, r.minutes), state: make([]byte, r.vol.StateSize), det: r.vol.New()}
	for i := range d.expected {
		d.expected[i] = math.NaN()
	}
	r.devs[device] = d
	r.order = append(r.order, d)
	return d
}

func (r *plotRecorder) minute(t int64) int {
	return min(max(0, int((t-r.start)/int64(time.Minute))), r.minutes-1)
}

// Score counts an event's combined score (set by the decision engine).
func (r *plotRecorder) Score(s float32) {
	r.events++
	r.scores[min(scoreBins-1, max(0, int(float64(s)*scoreBins)))]++
}

// Observe records ev if its device is plotted. It must be called just before
// the worker processes ev, so that the shadow volume detector reads the same
// fleet view as the worker's.
func (r *plotRecorder) Observe(ev *schemas.Event) {
	d := r.devs[string(ev.Device)]
	if d == nil {
		if r.normal || r.victims[string(ev.Device)] {
			return
		}
		// The first device without an attack, from its first event on.
		r.normal = true
		d = r.add(string(ev.Device), normalPlot, nil)
	}
	m := r.minute(ev.Time)
	d.count[m]++
	// Only findings without a reason give the band: a rate_spike's Expected
	// may be the medium window's, which is not per short window.
	f := d.det.Observe(ev, d.state, r.fleet)
	if f.Reason == schemas.ReasonNone && f.Expected > 0 {
		d.expected[m] = f.Expected * 60 / volume.TauShort // the minute's last
	}
}

// Alert records a's time if its device is plotted.
func (r *plotRecorder) Alert(a *schemas.Alert) {
	if d := r.devs[a.Device]; d != nil {
		d.alerts = append(d.alerts, float64(a.Time.UnixNano()-r.start)/float64(time.Minute))
	}
}

// Write writes one PNG per plotted device and the score histogram into dir
// and returns their paths.
func (r *plotRecorder) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create --plot directory %q: %w", dir, err)
	}
	var paths []string
	for _, d := range r.order {
		p, err := r.volumePlot(d)
		if err != nil {
			return nil, fmt.Errorf("cannot plot device %q: %w", d.device, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("volume-%s-%s.png", d.kind, d.device))
		if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
			return nil, fmt.Errorf("cannot write plot %q: %w", path, err)
		}
		paths = append(paths, path)
	}
	p, err := r.scorePlot()
	if err != nil {
		return nil, fmt.Errorf("cannot plot scores: %w", err)
	}
	path := filepath.Join(dir, "scores.png")
	if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
		return nil, fmt.Errorf("cannot write plot %q: %w", path, err)
	}
	return append(paths, path), nil
}

// Plot colours.
var (
	colVolume   = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colExpected = color.RGBA{G: 120, A: 255}
	colBand     = color.NRGBA{R: 160, G: 220, B: 160, A: 160}
	colAlert    = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colAttack   = color.RGBA{R: 120, G: 120, B: 120, A: 255}
)

// volumePlot draws d's requests per minute over the volume detector's band:
// from 0 to the smallest count it can flag, max(MinSpike, MinRatio × expected)
// per short window (the Poisson tail test can raise it further), with the
// expected count inside, the attack's window between grey dashes and the
// alerts marked.
func (r *plotRecorder) volumePlot(d *devicePlot) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%s): requests per minute against the volume detector's band", d.device, d.kind)
	p.X.Label.Text = "hours since the start"
	p.Y.Label.Text = "requests per minute"
	hour := func(m int) float64 { return float64(m) / 60 }
	perWindow := 60 / volume.TauShort // short windows per minute

	// The band in segments: a minute without a finding carries the last
	// expected value for up to bandCarry minutes (a meter reports every 5).
	var segs [][2]plotter.XYs // expected, upper edge
	last, lastAt := math.NaN(), 0
	for m, e := range d.expected {
		if !math.IsNaN(e) {
			if math.IsNaN(last) || m-lastAt > bandCarry {
				segs = append(segs, [2]plotter.XYs{})
			}
			last, lastAt = e, m
		}
		if math.IsNaN(last) || m-lastAt > bandCarry {
			continue
		}
		sg := &segs[len(segs)-1]
		sg[0] = append(sg[0], plotter.XY{X: hour(m), Y: last})
		sg[1] = append(sg[1], plotter.XY{X: hour(m), Y: max(volume.MinSpike*perWindow, volume.MinRatio*last)})
	}
	for i, sg := range segs {
		exp, upper := sg[0], sg[1]
		band := make(plotter.XYs, 0, 2*len(upper))
		band = append(band, upper...)
		for i := len(upper) - 1; i >= 0; i-- {
			band = append(band, plotter.XY{X: upper[i].X})
		}
		poly, err := plotter.NewPolygon(band)
		if err != nil {
			return nil, err
		}
		poly.Color, poly.LineStyle.Width = colBand, 0
		el, err := plotter.NewLine(exp)
		if err != nil {
			return nil, err
		}
		el.Color, el.Dashes = colExpected, []vg.Length{vg.Points(4), vg.Points(2)}
		p.Add(poly, el)
		if i == 0 {
			p.Legend.Add("band: no short-window spike below", poly)
			p.Legend.Add("expected", el)
		}
	}
	if len(segs) == 0 {
		p.Title.Text += " (no expected values reported)"
	}

	counts := make(plotter.XYs, len(d.count))
	for m, c := range d.count {
		counts[m] = plotter.XY{X: hour(m), Y: c}
	}
	vl, err := plotter.NewLine(counts)
	if err != nil {
		return nil, err
	}
	vl.Color, vl.StepStyle = colVolume, plotter.PreStep
	p.Add(vl)
	p.Legend.Add("requests", vl)

	if d.label != nil {
		for _, t := range []time.Time{d.label.Start, d.label.End} {
			x := float64(t.UnixNano()-r.start) / float64(time.Hour)
			_, _, _, ymax := plotter.XYRange(counts)
			ln, err := plotter.NewLine(plotter.XYs{{X: x}, {X: x, Y: max(ymax, 1)}})
			if err != nil {
				return nil, err
			}
			ln.Color, ln.Dashes = colAttack, []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(ln)
		}
	}
	if len(d.alerts) > 0 {
		pts := make(plotter.XYs, len(d.alerts))
		for i, m := range d.alerts {
			pts[i] = plotter.XY{X: m / 60, Y: d.count[r.minute(r.start+int64(m*float64(time.Minute)))]}
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: colAlert, Radius: vg.Points(3), Shape: draw.TriangleGlyph{}}
		p.Add(sc)
		p.Legend.Add("alert", sc)
	}
	p.Legend.Top = true
	return p, nil
}

// scorePlot draws the histogram of every event's combined score, with a
// log-scaled count axis (almost every event scores 0).
func (r *plotRecorder) scorePlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("combined scores of the fleet's %d events", r.events)
	p.X.Label.Text = "combined score"
	p.Y.Label.Text = "events (log scale)"
	h := &plotter.Histogram{Width: 1.0 / scoreBins, FillColor: colVolume, LogY: true}
	h.LineStyle = plotter.DefaultLineStyle
	for i, c := range r.scores {
		h.Bins = append(h.Bins, plotter.HistogramBin{Min: float64(i) / scoreBins, Max: float64(i+1) / scoreBins, Weight: c})
	}
	if r.events == 0 {
		return p, nil
	}
	p.Add(h)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	return p, nil
}
