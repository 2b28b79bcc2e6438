package geo

import "github.com/iotwatch/iotwatch/schemas"

// learn teaches s and its class table ev, as a ClassModel does after Observe.
func (s *Stats) learn(ev *schemas.Event) {
	s.classes.Learn(ev)
	s.Learn(ev, nil)
}
