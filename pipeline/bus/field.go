package bus

import "fmt"

// FieldError is an invalid StreamsConfig field, as StreamsConfig.Validate
// reports it. Its message is "cannot use streams config: " followed by the
// field's key and what is wrong with it; a program that sets the fields from
// settings of its own (flags, say) names them its way with Field and
// Problem.
type FieldError struct {
	// Field is the config key of the field at fault, such as "logs.max_age".
	Field string
	// Value is the field's value as the message prints it, and Rule what it
	// must be ("must be >= 0").
	Value, Rule string
	// Other is the config key of the field that Rule compares Field with, and
	// OtherValue its value; empty when there is none.
	Other, OtherValue string
}

func (e *FieldError) Error() string {
	return "cannot use streams config: " + e.Field + " " + e.Problem(func(key string) string { return key })
}

// Problem says what is wrong with the field, without naming it; name gives
// the name of another field that the message mentions, from its config key.
func (e *FieldError) Problem(name func(key string) string) string {
	msg := e.Value + " " + e.Rule
	if e.Other != "" {
		msg += " " + name(e.Other) + " " + e.OtherValue
	}
	return msg
}

// badField returns a FieldError: field's value v must be what rule says.
func badField(field string, v any, rule string) error {
	return &FieldError{Field: field, Value: fmt.Sprint(v), Rule: rule}
}

// badPair returns a FieldError: field's value v must relate to the field
// other's value ov as rule says.
func badPair(field string, v any, rule, other string, ov any) error {
	return &FieldError{Field: field, Value: fmt.Sprint(v), Rule: rule, Other: other, OtherValue: fmt.Sprint(ov)}
}
