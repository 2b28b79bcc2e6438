// Package teapot is the worked example of detectors/README.md ("Writing a
// detector"): the smallest complete detector, which flags a device that
// answers HTTP 418 I'm a teapot (RFC 2324).
//
// It is not registered in the binary: detectors/all has no file for it, since
// an example is no detector to run (its 4 bytes would join every device's
// record and change the layout the worker versions). Its tests register it next to the production detectors and run
// the conformance checks and the cross-detector scenarios, which proves that a
// new detector needs only its package and one file in detectors/all, and
// breaks no other test; they also check that the code the guide quotes is
// this package's code.
package teapot

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Name is the detector's registered name. It and its reason are
// user-facing (findings, alerts, dashboards): renaming one is a migration.
const Name = "teapot"

// ReasonTeapot is the reason of a 418 response.
const ReasonTeapot = "im_a_teapot" // the device answered HTTP 418 I'm a teapot

// StatusTeapot is the HTTP status the detector flags.
const StatusTeapot = 418

// StateSize is the size of a device's state:
//
//	0:4 number of 418 responses seen, uint32 little-endian (saturates)
const StateSize = 4

// Doc is the detector's paragraph in the generated catalog.
const Doc = "A device that answers HTTP 418 I'm a teapot (RFC 2324). The first 418 of a device scores 0.5, " +
	"the n-th 0.5/n: a device that always answers 418 is a teapot, not news. Observed is the number of " +
	"418 responses so far, this one included; Expected 0. No warm-up: a cold start forgets the count."

// Detector is the teapot detector. It has no parameters.
type Detector struct{}

// Observe counts the device's 418 responses in state and flags each one.
// Any 4 bytes are a valid count, so a garbage record reads as some history.
func (*Detector) Observe(ev *schemas.Event, state []byte, _ detectors.Fleet) schemas.Finding {
	if ev.Status != StatusTeapot {
		return schemas.Finding{}
	}
	n := binary.LittleEndian.Uint32(state)
	if n < 1<<32-1 {
		n++
	}
	binary.LittleEndian.PutUint32(state, n)
	return schemas.Finding{Detector: Name, Reason: ReasonTeapot, Score: 0.5 / float32(n), Observed: float64(n)}
}

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Version:   1, // bump when the meaning of the state bytes changes
		Reasons:   []string{ReasonTeapot},
		// Random events seldom carry a 418: make some.
		Shapes: []detectors.Shape{func(_ *rand.Rand, ev *schemas.Event) { ev.Status = StatusTeapot }},
		New:    func() detectors.Detector { return &Detector{} },
	})
}
