// Package bulk is the gRPC codec for Cohort's services. On the wire it is
// protobuf, field for field; what it changes is the copies of a message
// that carries model bytes (a ModelChunk, an UpdateChunk, a BlobChunk):
// a large bytes field is sent from the sender's own slice, not copied
// into the message's encoding first, and received with one copy out of
// the transport's frames instead of two (gRPC's protobuf codec gathers
// the frames into one buffer, then protobuf copies the field out of it).
// Every other message, and every small one, takes gRPC's protobuf path.
//
// A sender must not change the bytes of a message after Send: they go
// out after Send returns, read from its slice. Cohort's senders hand
// each chunk a slice of its own (model.ChunkWriter).
package bulk

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec this one falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Threshold is the size from which a bytes field is sent from its slice
// and read straight out of the frames: below it, protobuf's copies cost
// less than the codec's bookkeeping.
const Threshold = 64 << 10

// Codec is the codec; its zero value is ready. Its Name is "proto", so a
// peer sees an ordinary protobuf call.
type Codec struct {
	// threshold overrides Threshold (tests), when positive.
	threshold int
}

var _ encoding.CodecV2 = Codec{}

// Window is the HTTP/2 flow-control window, of each stream and of each
// connection, that Cohort's gRPC servers and clients announce
// (ServerOptions, DialOptions): fixed, where gRPC would otherwise grow it
// by its bandwidth-delay estimate. That estimate sends a PING, with a
// connection WINDOW_UPDATE, on the first data frame a connection receives
// once its previous PING was answered, and the peer answers it: on a
// site's connection, whose messages come one at a time (a task, an
// update, its answer, a heartbeat), a write and a read more on each side
// for nearly every message. With the window fixed instead, a 1,000-site
// job's two processes made 29% fewer write and 27% fewer read calls
// (strace -f -c, a run each; TestNoPingsBesideMessages). The estimate's
// ceiling is 16 MiB: what it reaches on a fast link, from the start. A
// receiver holds at most this much of a stream that its reader has not
// taken (an upload waiting for Config.MaxConcurrentUpdates, say): under
// the estimate a connection's window got there after its first large
// transfers (2 MiB after eight 1 MiB messages over loopback), here from
// its first.
const Window = 16 << 20

// ServerOptions make a gRPC server use the codec for every call, and
// [Window].
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.InitialWindowSize(Window),
		grpc.InitialConnWindowSize(Window),
	}
}

// DialOptions make a client connection use the codec for every call, and
// [Window].
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})),
		grpc.WithInitialWindowSize(Window),
		grpc.WithInitialConnWindowSize(Window),
	}
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return "proto" }

func (c Codec) limit() int {
	if c.threshold > 0 {
		return c.threshold
	}
	return Threshold
}

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2("proto") }

// Marshal implements encoding.CodecV2: the encoding of every field but
// the first large bytes one, then that field's tag and length, then its
// bytes as they are.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	o, isOwned := v.(*owned)
	if isOwned {
		v = o.Message
	}
	m, ok := v.(proto.Message)
	if !ok {
		return protoCodec().Marshal(v)
	}
	r := m.ProtoReflect()
	big, data := c.largeField(r)
	// An owned buffer that is not sent from its slice has been copied
	// into the encoding once Marshal returns: it goes back at once.
	giveBack := func() {
		if isOwned {
			b := o.buf
			o.pool.Put(&b)
		}
	}
	if big == nil {
		defer giveBack()
		return protoCodec().Marshal(v)
	}
	if err := proto.CheckInitialized(m); err != nil {
		return nil, err
	}
	// The rest of the message, without touching the sender's: a shallow
	// copy that shares every value but the large field.
	rest := r.New()
	r.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd != big {
			rest.Set(fd, val)
		}
		return true
	})
	rest.SetUnknown(r.GetUnknown())
	head, err := proto.MarshalOptions{AllowPartial: true}.Marshal(rest.Interface())
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, big.Number(), protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	if isOwned && len(o.buf) > 0 && &o.buf[0] == &data[0] {
		// Back to the pool once the transport has written it.
		return mem.BufferSlice{mem.SliceBuffer(head), mem.NewBuffer(&data, o.pool)}, nil
	}
	giveBack()
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(data)}, nil
}

// Buffers is a pool of the buffers of outgoing chunks: a sender fills one
// from Get, sends it in a message wrapped by [Owned], and the transport
// gives it back once written. Its zero value is ready; it is safe for
// concurrent use. A buffer is not cleared between uses.
type Buffers struct {
	pool sync.Pool // *[]byte
}

var _ mem.BufferPool = (*Buffers)(nil)

// Get returns a buffer of length n, from the pool where one is large
// enough.
func (b *Buffers) Get(n int) *[]byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		if cap(*p) >= n {
			*p = (*p)[:n]
			return p
		}
	}
	buf := make([]byte, n)
	return &buf
}

// Put gives a buffer back to the pool.
func (b *Buffers) Put(p *[]byte) { b.pool.Put(p) }

// Owned wraps msg for SendMsg, one of whose bytes fields is buf, a buffer
// from pool, so that buf goes back to pool once the transport is done
// with it: once written where it is sent from its slice, at once where
// the encoding copied it (a message under [Threshold]). The sender gives
// up buf with the call. To every other codec it is msg, sent as msg
// would be (and buf is left to the garbage collector).
func Owned(msg proto.Message, buf []byte, pool mem.BufferPool) any {
	return &owned{Message: msg, buf: buf, pool: pool}
}

// owned is a message holding buf, a buffer of pool.
type owned struct {
	proto.Message
	buf  []byte
	pool mem.BufferPool
}

// largeField returns the first singular bytes field of r set to at least
// the threshold, and its bytes; nil if none.
func (c Codec) largeField(r protoreflect.Message) (protoreflect.FieldDescriptor, []byte) {
	fields := bytesFields(r.Descriptor())
	for _, fd := range fields {
		if r.Has(fd) {
			if b := r.Get(fd).Bytes(); len(b) >= c.limit() {
				return fd, b
			}
		}
	}
	return nil, nil
}

var bytesFieldsOf sync.Map // protoreflect.MessageDescriptor → []protoreflect.FieldDescriptor

// bytesFields returns the singular bytes fields of messages of md. They
// are kept by descriptor, not name: two descriptors of one name (a
// dynamic message's) have fields of their own.
func bytesFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if fs, ok := bytesFieldsOf.Load(md); ok {
		return fs.([]protoreflect.FieldDescriptor)
	}
	var fs []protoreflect.FieldDescriptor
	for i := range md.Fields().Len() {
		if fd := md.Fields().Get(i); singularBytes(fd) {
			fs = append(fs, fd)
		}
	}
	bytesFieldsOf.Store(md, fs)
	return fs
}

// singularBytes reports whether fd is a bytes field that is not repeated:
// one the codec sends from its slice and reads straight out of the frames.
func singularBytes(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.BytesKind && fd.Cardinality() != protoreflect.Repeated
}

// errFallBack sends a message the direct reader does not take (a group,
// a malformed field) to protobuf, whose error, or result, is the answer.
var errFallBack = errors.New("bulk: not for the direct reader")

// Unmarshal implements encoding.CodecV2. A large bytes field is copied
// once, from the frames into its own slice; the fields around it are
// decoded by protobuf in their order, so the result is protobuf's,
// repeated and oneof fields included. Where v already holds a large bytes
// field (a receiver that passes the same message to RecvMsg again), its
// array is reused: such a receiver must be done with the last message's
// bytes.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok || data.Len() < c.limit() || len(bytesFields(m.ProtoReflect().Descriptor())) == 0 {
		return protoCodec().Unmarshal(data, v)
	}
	err := c.unmarshal(data, m)
	if errors.Is(err, errFallBack) {
		return protoCodec().Unmarshal(data, v)
	}
	return err
}

func (c Codec) unmarshal(data mem.BufferSlice, m proto.Message) error {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	// A message received into again lends its large field's array to
	// the same field.
	reuseField, reuse := c.largeField(r)
	proto.Reset(m)
	rd := data.Reader()
	defer rd.Close()
	var rest []byte // fields since the last large one, for protobuf
	flush := func() error {
		if len(rest) == 0 {
			return nil
		}
		// Partial: a required field may come in a later piece; the whole
		// is checked at the end.
		err := proto.UnmarshalOptions{Merge: true, AllowPartial: true}.Unmarshal(rest, m)
		rest = rest[:0]
		return err
	}
	for rd.Remaining() > 0 {
		// Each field's bytes are kept as they came (a varint written in
		// more bytes than it needs stays so, as protobuf keeps an unknown
		// field's), but for a large bytes field's.
		start := len(rest)
		var tag uint64
		var err error
		if tag, rest, err = readVarint(rd, rest); err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		if tag>>3 > uint64(protowire.MaxValidNumber) || !num.IsValid() {
			return errFallBack
		}
		switch typ {
		case protowire.VarintType:
			_, rest, err = readVarint(rd, rest)
		case protowire.Fixed32Type:
			rest, err = readN(rd, rest, 4)
		case protowire.Fixed64Type:
			rest, err = readN(rd, rest, 8)
		case protowire.BytesType:
			var n uint64
			if n, rest, err = readVarint(rd, rest); err != nil {
				return err
			}
			if n > uint64(rd.Remaining()) {
				return errFallBack
			}
			if fd := fields.ByNumber(num); int(n) >= c.limit() && fd != nil && singularBytes(fd) {
				rest = rest[:start]
				if err := flush(); err != nil {
					return err
				}
				var b []byte
				if fd == reuseField && cap(reuse) >= int(n) {
					b, reuse = reuse[:n], nil // once: the field again gets its own
				} else {
					b = make([]byte, n)
				}
				if _, err := io.ReadFull(rd, b); err != nil {
					return fmt.Errorf("bulk: reading field %d: %w", num, err)
				}
				r.Set(fd, protoreflect.ValueOfBytes(b))
				continue
			}
			rest, err = readN(rd, rest, int(n))
		default: // groups, and wire types that do not exist
			return errFallBack
		}
		if err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return proto.CheckInitialized(m)
}

// readVarint reads a varint, appending its bytes to dst, or falls back on
// a malformed one.
func readVarint(rd io.ByteReader, dst []byte) (uint64, []byte, error) {
	var x uint64
	for i := range 10 {
		b, err := rd.ReadByte()
		if err != nil {
			return 0, dst, errFallBack
		}
		dst = append(dst, b)
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			if i == 9 && b > 1 {
				return 0, dst, errFallBack
			}
			return x, dst, nil
		}
	}
	return 0, dst, errFallBack
}

// readN appends the next n bytes of rd to dst, or falls back where the
// message ends first.
func readN(rd *mem.Reader, dst []byte, n int) ([]byte, error) {
	if n > rd.Remaining() {
		return dst, errFallBack
	}
	dst = slices.Grow(dst, n)[:len(dst)+n]
	_, err := io.ReadFull(rd, dst[len(dst)-n:])
	return dst, err
}
