package sink

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// vector is a pgvector value. COPYing it in pgvector's binary format (int16
// dimensions, int16 unused, big-endian float32s) avoids the per-element
// headers and allocations of a float4[] and the server-side cast.
type vector []float32

// vectorCodec encodes vector in binary; it is registered per connection
// because the type's OID differs between databases.
type vectorCodec struct{}

func (vectorCodec) FormatSupported(f int16) bool { return f == pgtype.BinaryFormatCode }
func (vectorCodec) PreferredFormat() int16       { return pgtype.BinaryFormatCode }

func (vectorCodec) PlanEncode(_ *pgtype.Map, _ uint32, format int16, value any) pgtype.EncodePlan {
	if format != pgtype.BinaryFormatCode {
		return nil
	}
	switch value.(type) {
	case vector, *vector:
		return vectorEncodePlan{}
	}
	return nil
}

func (vectorCodec) PlanScan(*pgtype.Map, uint32, int16, any) pgtype.ScanPlan { return nil }

func (vectorCodec) DecodeDatabaseSQLValue(*pgtype.Map, uint32, int16, []byte) (driver.Value, error) {
	return nil, errors.New("sink: decoding vector is not supported")
}

func (vectorCodec) DecodeValue(*pgtype.Map, uint32, int16, []byte) (any, error) {
	return nil, errors.New("sink: decoding vector is not supported")
}

type vectorEncodePlan struct{}

func (vectorEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	var v vector
	switch x := value.(type) {
	case vector:
		v = x
	case *vector:
		if x == nil {
			return nil, nil
		}
		v = *x
	}
	if v == nil {
		return nil, nil
	}
	if len(v) > math.MaxInt16 {
		return nil, fmt.Errorf("sink: vector has %d dimensions", len(v))
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(v)))
	buf = binary.BigEndian.AppendUint16(buf, 0)
	for _, f := range v {
		buf = binary.BigEndian.AppendUint32(buf, math.Float32bits(f))
	}
	return buf, nil
}

func registerVector(ctx context.Context, conn *pgx.Conn) error {
	var oid uint32
	if err := conn.QueryRow(ctx, `SELECT 'vector'::regtype::oid`).Scan(&oid); err != nil {
		return fmt.Errorf("sink: look up the vector type: %w", err)
	}
	conn.TypeMap().RegisterType(&pgtype.Type{Name: "vector", OID: oid, Codec: vectorCodec{}})
	return nil
}
