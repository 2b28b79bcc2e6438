package detectors

import (
	"encoding/binary"
	"fmt"
)

// Class statistics merged across scorer instances. Each instance learns its
// classes only from the devices of the partitions it owns; to let a class
// see all its devices, every instance publishes its contribution
// (AppendContribution: its own learning, never what it merged) and merges
// the others' latest ones (a Merge, put in force with Apply) into an
// overlay its detectors read next to their own learning. The overlay is
// rebuilt off the hot path and swapped in through atomic pointers: Learn
// and the detectors' reads stay lock-free and allocation-free. Own
// learning never counts twice: it is not in the overlay, and the structures
// merged so far (sketches, earliest times, adoption windows) are idempotent
// unions anyway.
//
// What is merged, per structure:
//   - the class table (ClassTable): device sketches OR, the first event time
//     is the minimum;
//   - DeviceSketches (command: commands and transitions; geo: countries and
//     ASNs): OR;
//   - command's adoptions: the windows align on the latest, sketches of the
//     same window OR;
//   - volume's rate samples (the class's typical rate, young devices'
//     prior, and burstiness): per sample slot the smaller device key, the
//     bottom-1 sample of the union (of two copies of one device, after its
//     partition moved, the one learned up to the later event).
//
// A detector whose statistics do not implement ClassMerger (time-of-day,
// upload) stays instance-local, and so do the parts of a merging detector
// its MergeFrom leaves out (command's argument ranges, volume's class
// cycles and failure sketches).

// ContributionVersion versions AppendContribution's encoding.
const ContributionVersion = 1

// AppendContribution appends this instance's contribution to dst: the class
// table's snapshot and, for each detector whose statistics implement
// ClassMerger, its name and snapshot:
//
//	version u32 | table: length u64, bytes | count u32 |
//	count × (name length u16, name, length u64, snapshot)
//
// Concurrent Learn calls may or may not be included (as for checkpoints).
func (m *ClassModel) AppendContribution(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, ContributionVersion)
	dst = appendSection(dst, func(b []byte) []byte { return m.Table.AppendSnapshot(b) })
	n := 0
	for _, i := range m.learn {
		if _, ok := m.stats[i].(ClassMerger); ok {
			n++
		}
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	for _, i := range m.learn {
		if _, ok := m.stats[i].(ClassMerger); !ok {
			continue
		}
		name := m.Layout.Specs[i].Name
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(name)))
		dst = append(dst, name...)
		dst = appendSection(dst, m.stats[i].AppendSnapshot)
	}
	return dst
}

// appendSection appends a u64 length, then what add appends.
func appendSection(dst []byte, add func([]byte) []byte) []byte {
	at := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, 0)
	dst = add(dst)
	binary.LittleEndian.PutUint64(dst[at:], uint64(len(dst)-at-8))
	return dst
}

// Merge builds the overlay of a ClassModel from other instances'
// contributions: Begin, Add each, then Apply. It keeps a scratch model to
// decode contributions into, reused from one round to the next; each round
// allocates a fresh accumulator, since the previous one is in force. One
// goroutine at a time.
type Merge struct {
	target  *ClassModel
	layout  *Layout // the target's detectors whose statistics merge
	index   []int   // target layout index of each of layout's
	scratch *ClassModel
	acc     *ClassModel
	loaded  []bool
	added   int
}

// NewMerge returns a Merge for m.
func (m *ClassModel) NewMerge() *Merge {
	g := &Merge{target: m}
	var specs []Spec
	for _, i := range m.learn {
		if _, ok := m.stats[i].(ClassMerger); ok {
			specs = append(specs, m.Layout.Specs[i])
			g.index = append(g.index, i)
		}
	}
	g.layout = NewLayout(specs)
	g.loaded = make([]bool, len(specs))
	return g
}

// newModel returns an empty model of g's mergeable detectors, sized as the
// target's.
func (g *Merge) newModel() *ClassModel {
	t := g.target.Table
	return NewClassModel(g.layout, NewClassTable(t.CommandSlots(), t.ClassSlots()))
}

// Begin starts a round with an empty accumulator.
func (g *Merge) Begin() {
	g.acc, g.added = g.newModel(), 0
}

// Add merges one contribution (AppendContribution of another instance of
// the same layout and sizes) into the round's accumulator. A contribution
// that does not decode is an error and adds nothing; a detector it holds
// that this build lacks is skipped, and a detector it lacks adds nothing.
func (g *Merge) Add(b []byte) error {
	if g.acc == nil {
		g.Begin()
	}
	if g.scratch == nil {
		g.scratch = g.newModel()
	}
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != ContributionVersion {
		return fmt.Errorf("cannot merge class contribution: not version %d", ContributionVersion)
	}
	b = b[4:]
	table, b, err := readSection(b)
	if err != nil {
		return err
	}
	if err := g.scratch.Table.LoadSnapshot(table); err != nil {
		return fmt.Errorf("cannot merge class contribution: %w", err)
	}
	if len(b) < 4 {
		return fmt.Errorf("cannot merge class contribution: truncated")
	}
	n := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	clear(g.loaded)
	for range n {
		if len(b) < 2 || len(b) < 2+int(binary.LittleEndian.Uint16(b)) {
			return fmt.Errorf("cannot merge class contribution: truncated")
		}
		name := string(b[2 : 2+int(binary.LittleEndian.Uint16(b))])
		b = b[2+len(name):]
		var snap []byte
		if snap, b, err = readSection(b); err != nil {
			return err
		}
		for i, s := range g.layout.Specs {
			if s.Name == name {
				if err := g.scratch.stats[i].LoadSnapshot(snap); err != nil {
					return fmt.Errorf("cannot merge class contribution: %s: %w", name, err)
				}
				g.loaded[i] = true
			}
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("cannot merge class contribution: %d bytes after the end", len(b))
	}
	g.acc.Table.MergeFrom(g.scratch.Table)
	for i, ok := range g.loaded {
		if ok {
			g.acc.stats[i].(ClassMerger).MergeFrom(g.scratch.stats[i])
		}
	}
	g.added++
	return nil
}

// readSection reads a u64 length and that many bytes.
func readSection(b []byte) (section, rest []byte, err error) {
	if len(b) < 8 || uint64(len(b)-8) < binary.LittleEndian.Uint64(b) {
		return nil, nil, fmt.Errorf("cannot merge class contribution: truncated")
	}
	n := binary.LittleEndian.Uint64(b)
	return b[8 : 8+n], b[8+n:], nil
}

// Added returns how many contributions the round merged.
func (g *Merge) Added() int { return g.added }

// Apply puts the round's accumulator in force as the target's overlay (with
// no contribution added, it removes the overlay: a lone instance reads only
// its own learning) and ends the round.
func (g *Merge) Apply() {
	if g.acc == nil || g.added == 0 {
		g.target.Table.SetOverlay(nil)
		for _, i := range g.index {
			g.target.stats[i].(ClassMerger).SetOverlay(nil)
		}
		g.acc = nil
		return
	}
	g.target.Table.SetOverlay(g.acc.Table)
	for k, i := range g.index {
		g.target.stats[i].(ClassMerger).SetOverlay(g.acc.stats[k])
	}
	g.acc = nil
}
