package formats

import (
	"unsafe"

	"github.com/iotwatch/iotwatch/schemas"
)

// canonical is the canonical JSON encoding (schemas.Decoder). Options.Source
// and Options.Tenant fill src_id and tenant when a record has none; identity
// options do not apply (the record says how the device was identified).
type canonical struct {
	d      schemas.Decoder
	tenant []byte
	source []byte
}

func init() {
	register(schemas.FormatJSON, func(o Options) (Decoder, error) {
		return &canonical{d: schemas.Decoder{MaxLineBytes: o.MaxLineBytes, MaxFuture: int64(o.MaxClockSkew)}, tenant: []byte(o.Tenant), source: []byte(o.Source)}, nil
	})
}

func (c *canonical) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := c.d.Decode(line, seq, lineNo, now, ev); err != nil {
		return err
	}
	if len(ev.SourceID) == 0 && len(c.source) > 0 {
		ev.SetText(&ev.SourceID, c.source)
	}
	if len(ev.Tenant) == 0 && len(c.tenant) > 0 {
		ev.SetDevice(c.tenant, ev.Device)
		ev.SetClass(ev.Class)
	}
	return nil
}

func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
