package energy

import (
	"encoding/binary"
	"math"
)

// NVML's nvmlValueType_t, the type of a field value's union.
const (
	valueDouble = iota
	valueUint
	valueULong
	valueULongLong
	valueSLongLong
	valueSInt
	valueUShort
)

// fieldValue decodes an NVML field value's 8-byte union (little-endian, as
// on every platform NVML supports) according to its type. ok is false for
// a type it does not know, or a value that is not a finite number.
func fieldValue(typ uint32, b [8]byte) (v float64, ok bool) {
	switch typ {
	case valueDouble:
		v = math.Float64frombits(binary.LittleEndian.Uint64(b[:]))
	case valueUint:
		v = float64(binary.LittleEndian.Uint32(b[:]))
	case valueULong, valueULongLong:
		v = float64(binary.LittleEndian.Uint64(b[:]))
	case valueSLongLong:
		v = float64(int64(binary.LittleEndian.Uint64(b[:])))
	case valueSInt:
		v = float64(int32(binary.LittleEndian.Uint32(b[:])))
	case valueUShort:
		v = float64(binary.LittleEndian.Uint16(b[:]))
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}
