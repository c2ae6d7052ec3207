package message

import (
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// canonical encodes m as Snapchain's encoder (prost) does, which is the
// encoding the network hashes when a message carries no data_bytes.
//
// It differs from proto.Marshal in one respect that changes bytes: prost
// writes fields in ascending order of field number, placing a oneof at the
// number of its lowest member whichever member is set, while Go's runtime
// writes all oneofs last (for compatibility with its older implementation).
// Everything else follows proto3 as both runtimes implement it: zero-valued
// implicit-presence scalars are omitted, set oneof members and optional fields
// are written even when zero, repeated numeric fields are packed, and map
// entries omit default keys and values. Fields unknown to this build cannot be
// placed by number reliably, so they are appended at the end in the order they
// arrived; prost itself would have dropped them.
func canonical(m proto.Message) []byte {
	return appendMessage(nil, m.ProtoReflect())
}

type setField struct {
	pos protoreflect.FieldNumber
	fd  protoreflect.FieldDescriptor
	v   protoreflect.Value
}

func appendMessage(b []byte, m protoreflect.Message) []byte {
	var fields []setField
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fields = append(fields, setField{pos: position(fd), fd: fd, v: v})
		return true
	})
	slices.SortFunc(fields, func(a, b setField) int { return int(a.pos) - int(b.pos) })
	for _, f := range fields {
		b = appendField(b, f.fd, f.v)
	}
	return append(b, m.GetUnknown()...)
}

// position is the field number prost sorts a field by: its own, or the
// lowest number of the (real, not proto3-optional) oneof containing it.
func position(fd protoreflect.FieldDescriptor) protoreflect.FieldNumber {
	od := fd.ContainingOneof()
	if od == nil || od.IsSynthetic() {
		return fd.Number()
	}
	lowest := fd.Number()
	members := od.Fields()
	for i := range members.Len() {
		lowest = min(lowest, members.Get(i).Number())
	}
	return lowest
}

func appendField(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch {
	case fd.IsMap():
		return appendMap(b, fd, v.Map())
	case fd.IsList():
		list := v.List()
		if fd.IsPacked() {
			var packed []byte
			for i := range list.Len() {
				packed = appendScalar(packed, fd.Kind(), list.Get(i))
			}
			b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
			return protowire.AppendBytes(b, packed)
		}
		for i := range list.Len() {
			b = appendSingular(b, fd, list.Get(i))
		}
		return b
	default:
		return appendSingular(b, fd, v)
	}
}

func appendSingular(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
		return protowire.AppendBytes(b, appendMessage(nil, v.Message()))
	case protoreflect.GroupKind:
		b = protowire.AppendTag(b, fd.Number(), protowire.StartGroupType)
		b = appendMessage(b, v.Message())
		return protowire.AppendTag(b, fd.Number(), protowire.EndGroupType)
	case protoreflect.StringKind:
		b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
		return protowire.AppendString(b, v.String())
	case protoreflect.BytesKind:
		b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
		return protowire.AppendBytes(b, v.Bytes())
	}
	b = protowire.AppendTag(b, fd.Number(), wireType(fd.Kind()))
	return appendScalar(b, fd.Kind(), v)
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// appendScalar appends the untagged encoding of a numeric or bool value.
func appendScalar(b []byte, k protoreflect.Kind, v protoreflect.Value) []byte {
	switch k {
	case protoreflect.BoolKind:
		return protowire.AppendVarint(b, protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		return protowire.AppendVarint(b, uint64(v.Enum()))
	case protoreflect.Int32Kind:
		return protowire.AppendVarint(b, uint64(int32(v.Int())))
	case protoreflect.Int64Kind:
		return protowire.AppendVarint(b, uint64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.AppendVarint(b, v.Uint())
	case protoreflect.Sint32Kind:
		return protowire.AppendVarint(b, protowire.EncodeZigZag(int64(int32(v.Int()))))
	case protoreflect.Sint64Kind:
		return protowire.AppendVarint(b, protowire.EncodeZigZag(v.Int()))
	case protoreflect.Fixed32Kind:
		return protowire.AppendFixed32(b, uint32(v.Uint()))
	case protoreflect.Sfixed32Kind:
		return protowire.AppendFixed32(b, uint32(int32(v.Int())))
	case protoreflect.FloatKind:
		return protowire.AppendFixed32(b, math.Float32bits(float32(v.Float())))
	case protoreflect.Fixed64Kind:
		return protowire.AppendFixed64(b, v.Uint())
	case protoreflect.Sfixed64Kind:
		return protowire.AppendFixed64(b, uint64(v.Int()))
	case protoreflect.DoubleKind:
		return protowire.AppendFixed64(b, math.Float64bits(v.Float()))
	}
	return b
}

// appendMap writes entries in key order (prost's HashMap order is arbitrary;
// none of the hashed messages has a map), each as a message with key = 1 and
// value = 2, leaving out a default key or value as prost does.
func appendMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map) []byte {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, compareKeys)
	kd, vd := fd.MapKey(), fd.MapValue()
	for _, k := range keys {
		var entry []byte
		if kv := k.Value(); !isDefault(kd, kv) {
			entry = appendSingular(entry, kd, kv)
		}
		if vv := m.Get(k); vd.Kind() == protoreflect.MessageKind || !isDefault(vd, vv) {
			entry = appendSingular(entry, vd, vv)
		}
		b = protowire.AppendTag(b, fd.Number(), protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
	}
	return b
}

func isDefault(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	return v.Equal(fd.Default())
}

func compareKeys(a, b protoreflect.MapKey) int {
	switch x := a.Interface().(type) {
	case bool:
		y := b.Bool()
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case int32, int64:
		return cmpOrdered(a.Int(), b.Int())
	case uint32, uint64:
		return cmpOrdered(a.Uint(), b.Uint())
	}
	return cmpOrdered(a.String(), b.String())
}

func cmpOrdered[T int64 | uint64 | string](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
