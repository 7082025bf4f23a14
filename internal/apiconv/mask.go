package apiconv

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ApplyMask copies into dst the fields of src named by a field-mask path
// ("hosts", "upstream.sni", "health_check"). A field unset in src is cleared
// in dst. dst and src must be of the same message type. It fails, naming the
// path, when a path does not name a field.
func ApplyMask(dst, src proto.Message, path string) error {
	dm, sm := dst.ProtoReflect(), src.ProtoReflect()
	parts := strings.Split(path, ".")
	for i, name := range parts {
		fd := dm.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return fmt.Errorf("%q has no field %q", dm.Descriptor().Name(), name)
		}
		if i < len(parts)-1 {
			if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
				return fmt.Errorf("field %q has no sub-fields", name)
			}
			dm = dm.Mutable(fd).Message()
			sm = sm.Get(fd).Message()
			continue
		}
		if !sm.Has(fd) {
			dm.Clear(fd)
			return nil
		}
		dm.Set(fd, cloneValue(dm, fd, sm.Get(fd)))
	}
	return nil
}

// cloneValue deep-copies v, a value of field fd, for storing in m.
func cloneValue(m protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	switch {
	case fd.IsList():
		src := v.List()
		dst := m.NewField(fd).List()
		for i := 0; i < src.Len(); i++ {
			e := src.Get(i)
			if fd.Kind() == protoreflect.MessageKind {
				e = protoreflect.ValueOfMessage(proto.Clone(e.Message().Interface()).ProtoReflect())
			}
			dst.Append(e)
		}
		return protoreflect.ValueOfList(dst)
	case fd.Kind() == protoreflect.MessageKind:
		return protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect())
	default:
		return v
	}
}
