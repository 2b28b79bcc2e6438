package decide

import "github.com/iotwatch/iotwatch/internal/setting"

// FieldError is an invalid Config field, as Config.Validate reports it
// ("cannot use decide config: block_ttl ...").
type FieldError = setting.Error

func badField(field string, v any, rule string) error {
	return setting.Bad("decide", field, v, rule)
}

func badPair(field string, v any, rule, other string, ov any) error {
	return setting.BadPair("decide", field, v, rule, other, ov)
}
