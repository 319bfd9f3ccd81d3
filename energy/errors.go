package energy

import "errors"

// Errors the package returns; match them with errors.Is.
var (
	// ErrClosed is returned by [Meter.Start] after [Meter.Close].
	ErrClosed = errors.New("energy meter closed")
	// ErrInvalidOptions is wrapped by [NewMeter]'s error when an Options
	// field is out of range; the message names the field and the fix.
	ErrInvalidOptions = errors.New("invalid energy options")
)
