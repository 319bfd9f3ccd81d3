package bulk

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// pieces splits b into buffers of the given sizes in turn, as the
// transport hands a message over in frames.
func pieces(b []byte, sizes ...int) mem.BufferSlice {
	var s mem.BufferSlice
	for i := 0; len(b) > 0; i++ {
		n := min(max(sizes[i%len(sizes)], 1), len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	big := payload(3 << 20)
	tests := []struct {
		name string
		msg  proto.Message
		// direct: the encoding carries the sender's slice
		direct bool
	}{
		{"model chunk", &pb.ModelChunk{Offset: 1 << 30, Data: big, TotalSize: 5 << 30, Sha256: payload(32)}, true},
		{"update data", &pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: big}}, true},
		{"update header", &pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: &pb.UpdateHeader{TaskId: "t", Sha256: payload(32), Metrics: map[string]float64{"acc": 0.5}}}}, false},
		{"blob push", &pb.PushBlobRequest{FromNode: "n1", Size: 7, Data: big, Digest: "ab"}, true},
		{"small chunk", &pb.ModelChunk{Offset: 3, Data: payload(100)}, false},
		{"empty", &pb.ModelChunk{}, false},
		{"no bytes fields", &pb.FetchModelRequest{ModelId: "m", TaskId: "t"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proto.Clone(tt.msg)
			enc, err := Codec{}.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.msg, before) {
				t.Fatal("Marshal changed the message it sent")
			}
			wire := enc.Materialize()
			std, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(wire) != len(std) {
				t.Errorf("encoding of %d bytes, protobuf's %d", len(wire), len(std))
			}
			if got := len(enc) == 2 && &enc[1].ReadOnlyData()[0] == &big[0]; got != tt.direct {
				t.Errorf("the encoding shares the sender's slice: %v, want %v", got, tt.direct)
			}
			// Protobuf reads what the codec wrote, and the codec reads it
			// back from frames of any size.
			viaProto := tt.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, viaProto); err != nil {
				t.Fatalf("protobuf cannot read the encoding: %v", err)
			}
			if !proto.Equal(viaProto, tt.msg) {
				t.Fatal("protobuf reads another message from the encoding")
			}
			for _, sizes := range [][]int{{len(wire)}, {16 << 10}, {1, 2, 3, 5000}, {7}} {
				got := tt.msg.ProtoReflect().New().Interface()
				if err := (Codec{}).Unmarshal(pieces(wire, sizes...), got); err != nil {
					t.Fatalf("frames of %v: %v", sizes, err)
				}
				if !proto.Equal(got, tt.msg) {
					t.Fatalf("frames of %v: read another message", sizes)
				}
			}
		})
	}
}

// TestUnmarshalOrder: fields in any order and repeated, and oneof members
// replacing each other, read as protobuf reads them.
func TestUnmarshalOrder(t *testing.T) {
	big := payload(100 << 10)
	var b []byte
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, payload(70<<10)) // replaced by the later data
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 9)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, big)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 4)
	b = protowire.AppendTag(b, 99, protowire.BytesType) // unknown: kept
	b = protowire.AppendBytes(b, payload(80<<10))
	var want, got pb.ModelChunk
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if err := (Codec{}).Unmarshal(pieces(b, 16<<10), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, &want) || !bytes.Equal(got.Data, big) || got.Offset != 4 || got.TotalSize != 9 {
		t.Fatalf("got offset %d total %d data %d bytes, want protobuf's", got.Offset, got.TotalSize, len(got.Data))
	}

	// A header after the data replaces it, as in protobuf.
	var u []byte
	u = protowire.AppendTag(u, 2, protowire.BytesType)
	u = protowire.AppendBytes(u, big)
	u = protowire.AppendTag(u, 1, protowire.BytesType)
	h, _ := proto.Marshal(&pb.UpdateHeader{TaskId: "t"})
	u = protowire.AppendBytes(u, h)
	var uc pb.UpdateChunk
	if err := (Codec{}).Unmarshal(pieces(u, 4096), &uc); err != nil {
		t.Fatal(err)
	}
	if uc.GetHeader().GetTaskId() != "t" || uc.GetData() != nil {
		t.Fatalf("got %v, want the header, which came last", &uc)
	}
}

// TestUnmarshalMalformed: what protobuf refuses, the codec refuses.
func TestUnmarshalMalformed(t *testing.T) {
	ok := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), payload(70<<10)) // PushBlobRequest.data
	tests := map[string][]byte{
		"truncated data":    ok[:len(ok)-1],
		"length past end":   append(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.BytesType), 1<<40), payload(70<<10)...),
		"field number zero": append(protowire.AppendTag(nil, 0, protowire.VarintType), ok...),
		"wire type 7":       append([]byte{0x0f}, ok...),
		"varint too long":   append(ok, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02),
		"bad utf-8 after":   append(ok, append(protowire.AppendTag(nil, 1, protowire.BytesType), 1, 0xff)...),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			var m pb.PushBlobRequest
			if proto.Unmarshal(b, &m) == nil {
				t.Fatal("protobuf reads it: the case is not malformed")
			}
			if err := (Codec{}).Unmarshal(pieces(b, 1000), &m); err == nil {
				t.Fatal("read a message protobuf refuses")
			}
		})
	}
}

// FuzzUnmarshal: whatever the bytes and however they are framed, the
// codec reads what protobuf reads, or refuses what it refuses.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.ModelChunk{Offset: 1, Data: payload(40), TotalSize: 2, Sha256: payload(32)},
		&pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: payload(30)}},
		&pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: &pb.UpdateHeader{TaskId: "t", NumSamples: 3}}},
		&pb.PushBlobRequest{FromNode: "a", Data: payload(20), Digest: "d"},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(5), uint16(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, threshold uint8, frame uint16) {
		c := Codec{threshold: int(threshold%32) + 1}
		for _, newMsg := range []func() proto.Message{
			func() proto.Message { return &pb.ModelChunk{} },
			func() proto.Message { return &pb.UpdateChunk{} },
			func() proto.Message { return &pb.PushBlobRequest{} },
			// Received into again: a message holding large fields.
			func() proto.Message { return &pb.ModelChunk{Data: payload(64), Sha256: payload(40), Offset: 9} },
			func() proto.Message { return &pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: payload(64)}} },
			func() proto.Message { return &pb.PushBlobRequest{Data: payload(64), FromNode: "zz"} },
		} {
			want, got := newMsg(), newMsg()
			werr := proto.Unmarshal(b, want)
			gerr := c.Unmarshal(pieces(b, int(frame%64)+1, 3), got)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%T: protobuf's error %v, the codec's %v", want, werr, gerr)
			}
			if werr == nil && !proto.Equal(got, want) {
				t.Fatalf("%T: read %v, protobuf %v", want, got, want)
			}
		}
	})
}

// TestMarshalKeepsUnknown: a large message's unknown fields (a newer
// peer's) are sent on, as protobuf sends them.
func TestMarshalKeepsUnknown(t *testing.T) {
	m := &pb.ModelChunk{Offset: 1, Data: payload(100 << 10)}
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7)
	m.ProtoReflect().SetUnknown(unknown)
	enc, err := Codec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.ModelChunk
	if err := proto.Unmarshal(enc.Materialize(), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, m) {
		t.Fatalf("unknown fields after the round trip: %x, want %x", got.ProtoReflect().GetUnknown(), unknown)
	}
}

// proto2File is a proto2 file of dynamic messages: M {required int32 a =
// 1; optional bytes b = 2; optional int32 x = 3} and R {required bytes r
// = 1}. A call to it makes a new file, with descriptors of its own.
func proto2File(t *testing.T) protoreflect.FileDescriptor {
	t.Helper()
	opt, req := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum()
	i32, byt := descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(), descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("bulktest.proto"), Package: proto.String("bulktest"), Syntax: proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("M"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("a"), Number: proto.Int32(1), Label: req, Type: i32},
				{Name: proto.String("b"), Number: proto.Int32(2), Label: opt, Type: byt},
				{Name: proto.String("x"), Number: proto.Int32(3), Label: opt, Type: i32},
			},
		}, {
			Name:  proto.String("R"),
			Field: []*descriptorpb.FieldDescriptorProto{{Name: proto.String("r"), Number: proto.Int32(1), Label: req, Type: byt}},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestRequiredFields: a required field is checked on the whole message,
// whichever piece it comes in, and a large required field is sent.
func TestRequiredFields(t *testing.T) {
	file := proto2File(t)
	m := file.Messages().Get(0)
	b := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), payload(100<<10))
	a := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5)
	x := protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 6)
	for _, tt := range []struct {
		name string
		wire []byte
	}{
		{"a missing, only the large b", b},
		{"x, then b, then a", slices.Concat(x, b, a)},
		{"a, then b", slices.Concat(a, b)},
	} {
		want, got := dynamicpb.NewMessage(m), dynamicpb.NewMessage(m)
		werr := proto.Unmarshal(tt.wire, want)
		gerr := Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tt.wire)}, got)
		if (werr == nil) != (gerr == nil) || werr == nil && !proto.Equal(got, want) {
			t.Errorf("%s: the codec read %v, %v; protobuf %v, %v", tt.name, got, gerr, want, werr)
		}
	}
	rd := file.Messages().Get(1)
	r := dynamicpb.NewMessage(rd)
	r.Set(rd.Fields().Get(0), protoreflect.ValueOfBytes(payload(100<<10)))
	if _, err := (Codec{}).Marshal(r); err != nil {
		t.Errorf("Marshal of a large required field: %v", err)
	}
	if _, err := (Codec{}).Marshal(dynamicpb.NewMessage(m)); err == nil {
		t.Error("Marshal of a message without its required field: no error")
	}
}

// TestSameNameDescriptors: two descriptors of one name (two dynamic
// files) each read with their own fields.
func TestSameNameDescriptors(t *testing.T) {
	wire := slices.Concat(
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5),
		protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), payload(100<<10)))
	for i := range 2 {
		m := dynamicpb.NewMessage(proto2File(t).Messages().Get(0))
		if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, m); err != nil {
			t.Fatalf("descriptor %d: %v", i, err)
		}
	}
}

// TestOwned: an owned buffer goes back to its pool once the transport is
// done with it, and only it: sent from its slice, when the encoding is
// freed; copied into the encoding (a small message, or not the field sent
// from its slice), at once, and the large field sent is not pooled.
func TestOwned(t *testing.T) {
	shared := payload(100 << 10) // a digest, say, that the sender keeps
	for _, tt := range []struct {
		name      string
		size      int  // of the owned buffer
		asData    bool // the buffer is Data; else Sha256 is shared and Data the buffer
		putAtOnce int
		putOnFree int
	}{
		{"large, sent from its slice", 100 << 10, true, 0, 1},
		{"small, copied", 1000, true, 1, 0},
		{"small, beside a large field sent from its slice", 1000, false, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var pool countingBuffers
			buf := *pool.Get(tt.size)
			m := &pb.ModelChunk{Data: buf}
			if !tt.asData {
				m.Sha256 = shared
			}
			enc, err := Codec{}.Marshal(Owned(m, buf, &pool))
			if err != nil {
				t.Fatal(err)
			}
			if pool.put != tt.putAtOnce {
				t.Errorf("given back before the encoding is freed: %d, want %d", pool.put, tt.putAtOnce)
			}
			var got pb.ModelChunk
			if err := proto.Unmarshal(enc.Materialize(), &got); err != nil || !proto.Equal(&got, m) {
				t.Fatalf("sent %v, %v; want the message", &got, err)
			}
			enc.Free()
			if pool.put != tt.putAtOnce+tt.putOnFree {
				t.Errorf("given back once freed: %d, want %d", pool.put, tt.putAtOnce+tt.putOnFree)
			}
			if p, ok := pool.Buffers.pool.Get().(*[]byte); ok && len(*p) > 0 && &(*p)[0] == &shared[0] {
				t.Error("the pool holds the shared Sha256 array: the next Get writes into it")
			}
		})
	}
}

// TestReceiveReusesSameField: a message received into again lends its
// large field's array to that field only.
func TestReceiveReusesSameField(t *testing.T) {
	got := &pb.ModelChunk{Sha256: payload(100 << 10)} // large, and kept by the receiver
	sum := got.Sha256
	want := &pb.ModelChunk{Data: payload(100 << 10)}
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil || !proto.Equal(got, want) {
		t.Fatalf("read %v, %v", got, err)
	}
	if &got.Data[0] == &sum[0] {
		t.Error("Data was read into the array of the last message's Sha256")
	}
	again := &pb.ModelChunk{Data: payload(90 << 10)}
	wire, _ = proto.Marshal(again)
	data := got.Data
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil || !proto.Equal(got, again) {
		t.Fatalf("read %v, %v", got, err)
	}
	if &got.Data[0] != &data[0] {
		t.Error("Data received again did not reuse its array")
	}
}

// countingBuffers counts the buffers given back.
type countingBuffers struct {
	Buffers
	mu  sync.Mutex
	put int
}

func (c *countingBuffers) Put(p *[]byte) {
	c.mu.Lock()
	c.put++
	c.mu.Unlock()
	c.Buffers.Put(p)
}

// echoDesc is a service of one bidirectional method that sends back each
// ModelChunk it receives, for the test over real gRPC.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "bulktest.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Echo", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			var m pb.ModelChunk // received into again
			for {
				if err := stream.RecvMsg(&m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				// Sent from a pooled copy: the next receive reuses m's array.
				buf := serverBuffers.Get(len(m.Data))
				copy(*buf, m.Data)
				out := &pb.ModelChunk{Offset: m.Offset, Data: *buf, Sha256: m.Sha256}
				if err := stream.SendMsg(Owned(out, out.Data, &serverBuffers)); err != nil {
					return err
				}
			}
		},
	}},
}

var serverBuffers countingBuffers

// loopback listens on a free loopback port.
func loopback(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// echoOver serves the echo service on lis with srv's options and opens
// its stream from a client with dial's (in plain text); the server and
// the client stop when the test ends.
func echoOver(t *testing.T, lis net.Listener, srv []grpc.ServerOption, dial []grpc.DialOption) (*grpc.Server, *grpc.ClientConn, grpc.ClientStream) {
	t.Helper()
	gs := grpc.NewServer(srv...)
	gs.RegisterService(&echoDesc, nil)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), slices.Concat(dial, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())})...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := cc.NewStream(t.Context(), &echoDesc.Streams[0], "/bulktest.Echo/Echo")
	if err != nil {
		t.Fatal(err)
	}
	return gs, cc, stream
}

// TestOverGRPC sends chunks over loopback gRPC between peers with and
// without the codec: every pairing carries every byte, a buffer sent from
// the pool goes back to it, and a message received into again keeps its
// array.
func TestOverGRPC(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		serverCodec, clientCodec bool
	}{{"both", true, true}, {"server only", true, false}, {"client only", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			var srvOpts []grpc.ServerOption
			if tt.serverCodec {
				srvOpts = ServerOptions()
			}
			var dial []grpc.DialOption
			if tt.clientCodec {
				dial = DialOptions()
			}
			gs, cc, stream := echoOver(t, loopback(t), srvOpts, dial)
			serverBuffers.mu.Lock()
			putBefore := serverBuffers.put
			serverBuffers.mu.Unlock()

			const chunks = 20
			var clientBuffers countingBuffers
			var got pb.ModelChunk
			var arrays = map[*byte]bool{}
			for i := range chunks {
				buf := clientBuffers.Get(Threshold + (chunks-i)*1000) // smaller each time: the receiver's array fits the next
				for j := range *buf {
					(*buf)[j] = byte(i + j)
				}
				want := bytes.Clone(*buf)
				if err := stream.SendMsg(Owned(&pb.ModelChunk{Offset: int64(i), Data: *buf, Sha256: payload(32)}, *buf, &clientBuffers)); err != nil {
					t.Fatal(err)
				}
				if err := stream.RecvMsg(&got); err != nil {
					t.Fatal(err)
				}
				if got.Offset != int64(i) || !bytes.Equal(got.Data, want) || !bytes.Equal(got.Sha256, payload(32)) {
					t.Fatalf("chunk %d came back changed (offset %d, %d bytes)", i, got.Offset, len(got.Data))
				}
				arrays[&got.Data[:1][0]] = true
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if err := stream.RecvMsg(&got); !errors.Is(err, io.EOF) {
				t.Fatalf("end of stream: %v", err)
			}
			// Each side's codec gives its sent buffers back (the other
			// side's protobuf codec copies them and leaves them to the
			// collector); a receive into the same message reuses its array
			// as long as it is large enough. Closing the connection and
			// the server waits for their writers, which give them back.
			cc.Close()
			clientBuffers.mu.Lock()
			if want := map[bool]int{true: chunks, false: 0}[tt.clientCodec]; clientBuffers.put != want {
				t.Errorf("client: %d buffers given back, want %d", clientBuffers.put, want)
			}
			clientBuffers.mu.Unlock()
			gs.GracefulStop()
			serverBuffers.mu.Lock()
			if want := map[bool]int{true: chunks, false: 0}[tt.serverCodec]; serverBuffers.put-putBefore != want {
				t.Errorf("server: %d buffers given back, want %d", serverBuffers.put-putBefore, want)
			}
			serverBuffers.mu.Unlock()
			if tt.clientCodec && len(arrays) == chunks {
				t.Errorf("every chunk arrived in an array of its own: the receive did not reuse the message's")
			}
			if !tt.clientCodec && len(arrays) != chunks {
				t.Errorf("protobuf reused an array")
			}
		})
	}
}
