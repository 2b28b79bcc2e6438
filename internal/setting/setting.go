// Package setting is the error a library package's Validate returns for an
// invalid configuration field (decide.Config, bus.StreamsConfig): structured,
// so that a program that sets the fields from settings of its own (the
// command's flags) names the setting at fault its own way, without rewriting
// the message's text.
package setting

import "fmt"

// Error is an invalid field of a configuration. Its message is
// "cannot use <Config> config: " followed by the field's key and what is
// wrong with it.
type Error struct {
	// Config names the configuration ("decide", "streams").
	Config string
	// Field is the config key of the field at fault, such as "block_ttl".
	Field string
	// Value is the field's value as the message prints it, and Rule what it
	// must be ("must be > 0"); empty when Err says what is wrong.
	Value, Rule string
	// Other is the config key of the field that Rule compares Field with, and
	// OtherValue its value; empty when there is none.
	Other, OtherValue string
	// Err is why the value is unusable when it does not parse.
	Err error
}

func (e *Error) Error() string {
	sep := " "
	if e.Err != nil {
		sep = ": "
	}
	return "cannot use " + e.Config + " config: " + e.Field + sep + e.Problem(func(key string) string { return key })
}

func (e *Error) Unwrap() error { return e.Err }

// Problem says what is wrong with the field, without naming it; name gives
// the name of another field that the message mentions, from its config key.
func (e *Error) Problem(name func(key string) string) string {
	if e.Err != nil {
		return e.Err.Error()
	}
	msg := e.Value + " " + e.Rule
	if e.Other != "" {
		msg += " " + name(e.Other) + " " + e.OtherValue
	}
	return msg
}

// Bad returns an Error of config: field's value v must be what rule says.
func Bad(config, field string, v any, rule string) error {
	return &Error{Config: config, Field: field, Value: fmt.Sprint(v), Rule: rule}
}

// BadPair returns an Error of config: field's value v must relate to the
// field other's value ov as rule says.
func BadPair(config, field string, v any, rule, other string, ov any) error {
	return &Error{Config: config, Field: field, Value: fmt.Sprint(v), Rule: rule, Other: other, OtherValue: fmt.Sprint(ov)}
}
