package schemas

// Dead-letter reasons: why a record went to the dead-letter stream
// (IOTWATCH_DLQ) instead of being scored. Each is a DecodeError's Reason and
// a dead letter's reason header, and ends up in stored rows and metric
// labels: the values are user-facing, and renaming one is a migration. Every
// dead-letter reason is declared here, and only here.
const (
	// Records of any format.

	DeadLetterTooLarge            = "too_large"              // longer than the line limit (DefaultMaxLineBytes)
	DeadLetterInvalidUTF8         = "invalid_utf8"           // not valid UTF-8
	DeadLetterMissingField        = "missing_field"          // no time, no event, or no device and no client IP
	DeadLetterBadField            = "bad_field"              // a field of the wrong type or out of its range
	DeadLetterBadTimestamp        = "bad_timestamp"          // a time that does not parse
	DeadLetterTimestampOutOfRange = "timestamp_out_of_range" // a time too far in the past or the future
	// DeadLetterUndecodable: a decoder failed without a DecodeError saying why.
	DeadLetterUndecodable = "undecodable"

	// JSON formats.

	DeadLetterMalformedJSON      = "malformed_json"      // not JSON
	DeadLetterNotObject          = "not_an_object"       // JSON, but not an object
	DeadLetterUnsupportedVersion = "unsupported_version" // canonical JSON of an encoding version this build does not read

	// Text formats (NGINX combined, Mosquitto).

	DeadLetterMalformedLine = "malformed_line" // a line without the format's shape

	// Arrow event batches (IOTWATCH_EVENTS, or a producer's own).

	// DeadLetterBadArrow: a message that is not a readable Arrow IPC stream
	// of the event schema (EventArrowSchema), or of another major version of
	// it; the whole message is kept.
	DeadLetterBadArrow = "bad_arrow"

	// Messages, dead-lettered whole or from a record on.

	// DeadLetterUnknownFormat: a message whose subject names no known format.
	DeadLetterUnknownFormat = "unknown_format"
	// DeadLetterTooManyBadLines: the rest of a message after too many
	// undecodable records (pipeline.MaxBadLinesPerMessage).
	DeadLetterTooManyBadLines = "too_many_bad_lines"
	// DeadLetterTooManyLines: the records of a message beyond
	// MaxLinesPerMessage.
	DeadLetterTooManyLines = "too_many_lines"
)
