package command

// Name is the command detector's registered name. It and the reasons below
// are user-facing (findings, alerts, ClickHouse rows, dashboards): renaming
// one is a migration.
const Name = "command"

// Reasons the command detector returns.
const (
	ReasonNewCommand      = "new_command"                // a command this device never issued, seen before in its class
	ReasonNewClassCommand = "new_class_command"          // a command never seen for this device nor its class
	ReasonPrivilegedNew   = "privileged_command_new"     // a privileged command (unlock, firmware, credentials) this device never issued
	ReasonEnumeration     = "enumeration"                // many distinct resource ids in a short window
	ReasonRareTransition  = "rare_transition"            // a command following another in an order (almost) no device of the class used
	ReasonParamOutOfRange = "param_out_of_range"         // a numeric argument far outside the range its class learned for the command (a thermostat set to 90 °C)
	ReasonResponseSize    = "response_size_out_of_range" // a response far larger than the range its class learned for the command (downloads growing through a command the device uses)
)
