package bus

import "github.com/iotwatch/iotwatch/internal/setting"

// FieldError is an invalid StreamsConfig field, as StreamsConfig.Validate
// reports it ("cannot use streams config: logs.max_age ...").
type FieldError = setting.Error

func badField(field string, v any, rule string) error {
	return setting.Bad("streams", field, v, rule)
}

func badPair(field string, v any, rule, other string, ov any) error {
	return setting.BadPair("streams", field, v, rule, other, ov)
}
