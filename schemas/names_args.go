package schemas

// Reason code of the command detector for numeric command arguments.
const (
	ReasonParamOutOfRange = "param_out_of_range" // a numeric argument far outside the range its class learned for the command (a thermostat set to 90 °C)
)
