package timeofday

// Name is the time-of-day detector's registered name. It and the reason below
// are user-facing (findings, alerts, ClickHouse rows, dashboards): renaming
// one is a migration.
const Name = "timeofday"

// ReasonOddHourCommand: the device issued a command at a local hour of the
// day at which no other device of its class issues it, though many of them
// issue it at other hours and the class is active at this one (Observed: the
// local hour of day, 3.2 for 03:12; Expected: how many other devices of the
// class issue the command at its other hours; ObservedLabel: "03h local" or
// "03h UTC").
const ReasonOddHourCommand = "odd_hour_command"
