package mlflowwire

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
)

// maxIntegralFloat bounds the integral JSON numbers written with a
// fraction or exponent ("1e3", "5.0") that [Int64] takes: beyond it a
// float64 no longer holds every integer exactly.
const maxIntegralFloat = 1 << 62

// Int64 is a protobuf int64 in MLflow's JSON. It is written as a JSON
// number, as MLflow's message_to_json writes int64 fields; it is read
// from a number or a string holding a decimal integer ("1700000000000"),
// as protobuf's JSON mapping takes, or from an integral number written
// with an exponent or fraction ("1e3", 5.0) up to ±2^62. Anything else —
// a fraction, a value outside int64, a word — fails with a
// [*json.UnmarshalTypeError] naming the value. null leaves it unchanged.
type Int64 int64

// NewInt64 returns a pointer to n as an Int64, for the optional fields.
func NewInt64(n int64) *Int64 {
	v := Int64(n)
	return &v
}

// MarshalJSON implements [json.Marshaler]: a JSON number.
func (n Int64) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(n), 10), nil
}

// UnmarshalJSON implements [json.Unmarshaler].
func (n *Int64) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(bytes.Trim(b, `"`))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > maxIntegralFloat {
			return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[int64]()}
		}
		v = int64(f)
	}
	*n = Int64(v)
	return nil
}

// Float64 is a protobuf double in MLflow's JSON. It is written as a JSON
// number, or as the string "NaN", "Infinity" or "-Infinity" (JSON has no
// such numbers); it is read from a number, one of those strings ("inf",
// "Inf", "-inf" and "-Inf" too, as Python writes them) or a string
// holding a finite decimal number. Anything else fails with a
// [*json.UnmarshalTypeError] naming the value. null leaves it unchanged.
type Float64 float64

// MarshalJSON implements [json.Marshaler].
func (f Float64) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON implements [json.Unmarshaler].
func (f *Float64) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	bad := &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[float64]()}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return bad
		}
		switch s {
		case "NaN":
			*f = Float64(math.NaN())
			return nil
		case "Infinity", "inf", "Inf":
			*f = Float64(math.Inf(1))
			return nil
		case "-Infinity", "-inf", "-Inf":
			*f = Float64(math.Inf(-1))
			return nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return bad
	}
	*f = Float64(v)
	return nil
}
