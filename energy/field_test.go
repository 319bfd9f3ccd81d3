package energy

import (
	"encoding/binary"
	"math"
	"testing"
)

func TestFieldValue(t *testing.T) {
	le64 := func(v uint64) (b [8]byte) { binary.LittleEndian.PutUint64(b[:], v); return }
	le32 := func(v uint32) (b [8]byte) { binary.LittleEndian.PutUint32(b[:], v); return }
	tests := []struct {
		typ    uint32
		b      [8]byte
		want   float64
		wantOK bool
	}{
		{valueDouble, le64(math.Float64bits(312000.5)), 312000.5, true},
		{valueUint, le32(312000), 312000, true},
		{valueULong, le64(1 << 40), 1 << 40, true},
		{valueULongLong, le64(7), 7, true},
		{valueSLongLong, le64(uint64(1<<64 - 5)), -5, true},
		{valueSInt, le32(uint32(1<<32 - 3)), -3, true},
		{valueUShort, le32(0xffff_0102), 0x0102, true},
		{valueDouble, le64(math.Float64bits(math.NaN())), 0, false},
		{valueDouble, le64(math.Float64bits(math.Inf(-1))), 0, false},
		{7, le64(1), 0, false},
	}
	for _, tt := range tests {
		got, ok := fieldValue(tt.typ, tt.b)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("fieldValue(%d, % x) = %v, %v; want %v, %v", tt.typ, tt.b, got, ok, tt.want, tt.wantOK)
		}
	}
}

// FuzzFieldValue: any union decodes to a finite number or is refused.
func FuzzFieldValue(f *testing.F) {
	f.Add(uint32(valueDouble), uint64(math.Float64bits(250.5)))
	f.Add(uint32(valueUint), uint64(312000))
	f.Add(uint32(valueSLongLong), uint64(1<<63))
	f.Add(uint32(99), uint64(0))
	f.Fuzz(func(t *testing.T, typ uint32, raw uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], raw)
		v, ok := fieldValue(typ, b)
		if ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Fatalf("fieldValue(%d, %x) = %v, ok", typ, raw, v)
		}
		if !ok && v != 0 {
			t.Fatalf("fieldValue(%d, %x) refused but returned %v", typ, raw, v)
		}
	})
}
