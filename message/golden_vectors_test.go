package message_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"testing"

	pb "github.com/waypointhq/waypoint/proto"
)

// The vectors below are Snapchain's crypto-layer conformance corpus (v1, as of
// release v0.14.2): thirteen messages whose inputs are rebuilt here in Go and
// whose expected bytes, hash and signature are copied from the corpus.
//
// The corpus manifest pins "network: Devnet", but that is the network of the
// engine it computed state roots with (a devnet engine accepts messages of
// any network). The messages themselves are built by Snapchain's test factory
// with network = MAINNET: every data_bytes contains 20 01 (field 4 = 1). So
// they are rebuilt with MAINNET here, and validating them for DEVNET must fail
// with ReasonNetwork.
const (
	vectorFID       = 1234
	vectorTimestamp = 94608000 // 2024-01-01T00:00:00Z in Farcaster time
	vectorNetwork   = pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET
	// vectorSeed is the Ed25519 seed every vector is signed with.
	vectorSeed = "1000000000000000000000000000000000000000000000000000000000000000"
)

type golden struct {
	id   string
	body func(t *testing.T) (pb.MessageType, func(*pb.MessageData))
	want expected
}

// expected holds a vector's expected values as the corpus states them, hex.
type expected struct {
	dataBytes, hash, signature, signer, messageBytes string
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test table: %v", err)
	}
	return b
}

func repeat(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func vectorKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(unhex(t, vectorSeed))
}

// buildData assembles a vector's MessageData from its semantic inputs.
func buildData(t *testing.T, g golden) *pb.MessageData {
	typ, setBody := g.body(t)
	d := &pb.MessageData{
		Type:      typ,
		Fid:       vectorFID,
		Timestamp: vectorTimestamp,
		Network:   vectorNetwork,
	}
	setBody(d)
	return d
}

func castAdd(text string) func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
	return func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
		return pb.MessageType_MESSAGE_TYPE_CAST_ADD, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: text, Type: pb.CastType_CAST}}
		}
	}
}

func reaction(typ pb.MessageType) func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
	return func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
		return typ, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{
				Type:   pb.ReactionType_REACTION_TYPE_LIKE,
				Target: &pb.ReactionBody_TargetCastId{TargetCastId: &pb.CastId{Fid: 321, Hash: repeat(0x02, 20)}},
			}}
		}
	}
}

func link(typ pb.MessageType, linkType string) func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
	return func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
		return typ, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{
				Type:   linkType,
				Target: &pb.LinkBody_TargetFid{TargetFid: 456},
			}}
		}
	}
}

// abiWord left-pads v to one 32-byte ABI word.
func abiWord(v []byte) []byte {
	w := make([]byte, 32)
	copy(w[32-len(v):], v)
	return w
}

func abiUint(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return abiWord(b[:])
}

// signedKeyRequestMetadata is the ABI encoding of the key registry's
// SignedKeyRequestMetadata tuple (requestFid, requestSigner, signature,
// deadline), the metadata of an off-chain KeyAdd.
func signedKeyRequestMetadata(requestFID uint64, requestSigner, signature []byte, deadline uint64) []byte {
	var b []byte
	b = append(b, abiUint(0x20)...) // offset of the tuple
	b = append(b, abiUint(requestFID)...)
	b = append(b, abiWord(requestSigner)...)
	b = append(b, abiUint(0x80)...) // offset of signature within the tuple
	b = append(b, abiUint(deadline)...)
	b = append(b, abiUint(uint64(len(signature)))...)
	padded := make([]byte, (len(signature)+31)/32*32)
	copy(padded, signature)
	return append(b, padded...)
}

// The EIP-712 (secp256k1) signatures in the KeyAdd and KeyRemove vectors are
// deterministic signatures by the corpus's custody keys (0x11…11 for the fid,
// 0x22…22 for the requesting app, whose address is appCustodyAddress). This
// package neither makes nor checks them, so they enter as fixed inputs.
const (
	appCustodyAddress    = "1563915e194d8cfba1943570603f7606a3115508"
	keyAddCustodySig     = "1c86bd397e6e6b77fa92a419550c2a868f8665ed61af7e122f98437b536b8b6063bbe8e7752667e5d4303cd940894189d26a2208911d426bc4c0fe289019ef381c"
	keyAddRequestSig     = "df5cadcd4d7f585ddade01de28371dc96bfcd1c1a163c8cb82b429ed4700797963d611356be12d972dc5379ec4d7f297ab498585c832dd6ef9651921992c1b731c"
	keyRemoveCustodySig  = "9a7ae0a0284747b8fab028499bfb9195b8f60dd317160c754dbee389356264dc4e225cf4c89b88a05ba0895c91b18da433c7acb24607444ba562cf86ada39e3a1c"
	keyDeadline          = 99999999
	keyTypeEd25519       = 1
	metadataTypeSignedKR = 1
)

func goldenVectors() []golden {
	want := corpusExpected()
	vs := []golden{
		{id: "cast_add_basic", body: castAdd("Hello, Farcaster!")},
		{id: "cast_remove", body: func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
			return pb.MessageType_MESSAGE_TYPE_CAST_REMOVE, func(d *pb.MessageData) {
				d.Body = &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: repeat(0x01, 20)}}
			}
		}},
		{id: "reaction_add_like", body: reaction(pb.MessageType_MESSAGE_TYPE_REACTION_ADD)},
		{id: "reaction_remove_like", body: reaction(pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE)},
		{id: "link_add_follow", body: link(pb.MessageType_MESSAGE_TYPE_LINK_ADD, "follow")},
		{id: "link_remove_follow", body: link(pb.MessageType_MESSAGE_TYPE_LINK_REMOVE, "follow")},
		{id: "link_add_block", body: link(pb.MessageType_MESSAGE_TYPE_LINK_ADD, "block")},
		{id: "link_remove_block", body: link(pb.MessageType_MESSAGE_TYPE_LINK_REMOVE, "block")},
		{id: "link_compact_state_follow", body: func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
			return pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE, func(d *pb.MessageData) {
				d.Body = &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{
					Type: "follow", TargetFids: []uint64{456},
				}}
			}
		}},
		{id: "user_data_add_display", body: func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
			return pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, func(d *pb.MessageData) {
				d.Body = &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{
					Type: pb.UserDataType_USER_DATA_TYPE_DISPLAY, Value: "Test User",
				}}
			}
		}},
		{id: "verification_add_eth", body: func(*testing.T) (pb.MessageType, func(*pb.MessageData)) {
			return pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, func(d *pb.MessageData) {
				// verification_type, chain_id and protocol are all 0 and so
				// not encoded; the claim signature is a fixed placeholder.
				d.Body = &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{
					Address:        repeat(0x03, 20),
					ClaimSignature: repeat(0x05, 65),
					BlockHash:      repeat(0x04, 32),
					Protocol:       pb.Protocol_PROTOCOL_ETHEREUM,
				}}
			}
		}},
		{id: "key_add_ed25519", body: func(t *testing.T) (pb.MessageType, func(*pb.MessageData)) {
			signer := vectorKey(t).Public().(ed25519.PublicKey)
			meta := signedKeyRequestMetadata(vectorFID, unhex(t, appCustodyAddress), unhex(t, keyAddRequestSig), keyDeadline)
			return pb.MessageType_MESSAGE_TYPE_KEY_ADD, func(d *pb.MessageData) {
				d.Body = &pb.MessageData_KeyAddBody{KeyAddBody: &pb.KeyAddBody{
					Key:              signer, // the vector adds its own signer
					KeyType:          keyTypeEd25519,
					CustodySignature: unhex(t, keyAddCustodySig),
					Deadline:         keyDeadline,
					Nonce:            1,
					Metadata:         meta,
					MetadataType:     metadataTypeSignedKR,
					Scopes:           []int32{int32(pb.MessageType_MESSAGE_TYPE_CAST_ADD)},
					Ttl:              0,
				}}
			}
		}},
		{id: "key_remove_custody", body: func(t *testing.T) (pb.MessageType, func(*pb.MessageData)) {
			return pb.MessageType_MESSAGE_TYPE_KEY_REMOVE, func(d *pb.MessageData) {
				d.Body = &pb.MessageData_KeyRemoveBody{KeyRemoveBody: &pb.KeyRemoveBody{
					Key:           repeat(0x06, 32),
					Signature:     unhex(t, keyRemoveCustodySig),
					SignatureType: 1,
					Deadline:      keyDeadline,
					Nonce:         2,
				}}
			}
		}},
	}
	for i := range vs {
		vs[i].want = want[vs[i].id]
	}
	return vs
}

// corpusExpected returns the corpus's expected values by vector id.
func corpusExpected() map[string]expected {
	return map[string]expected{
		"cast_add_basic": {
			dataBytes:    "080110d2091880b58e2d20012a13221148656c6c6f2c2046617263617374657221",
			hash:         "27f49c6928369d64495f4c4dd142c2e7389ebf1e",
			signature:    "4f67a836aa72f3c5a2658126479748ffb21d9cb862bccacd2a731990d1650ee6334d993a4563190bc96242f37da24c2de79c6c425d35a7ec3995454e90cb3f0f",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a21080110d2091880b58e2d20012a13221148656c6c6f2c2046617263617374657221121427f49c6928369d64495f4c4dd142c2e7389ebf1e180122404f67a836aa72f3c5a2658126479748ffb21d9cb862bccacd2a731990d1650ee6334d993a4563190bc96242f37da24c2de79c6c425d35a7ec3995454e90cb3f0f2801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a21080110d2091880b58e2d20012a13221148656c6c6f2c2046617263617374657221",
		},
		"cast_remove": {
			dataBytes:    "080210d2091880b58e2d200132160a140101010101010101010101010101010101010101",
			hash:         "b7d1cd976fb46bf5a6fdbdca32717c8404277e2d",
			signature:    "962a31a2614c59c56290c9e6f7ea85bef3248ef7e51c91cdb9bb6d43ef4bfc7f7287cfdadf4a53e836969e324bce4283dbe2a4b5cde33ac61359bad9f0f7a20b",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a24080210d2091880b58e2d200132160a1401010101010101010101010101010101010101011214b7d1cd976fb46bf5a6fdbdca32717c8404277e2d18012240962a31a2614c59c56290c9e6f7ea85bef3248ef7e51c91cdb9bb6d43ef4bfc7f7287cfdadf4a53e836969e324bce4283dbe2a4b5cde33ac61359bad9f0f7a20b2801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a24080210d2091880b58e2d200132160a140101010101010101010101010101010101010101",
		},
		"reaction_add_like": {
			dataBytes:    "080310d2091880b58e2d20013a1d0801121908c10212140202020202020202020202020202020202020202",
			hash:         "bbe457a26f1099b0d75d9965bcac691bbb4ce49a",
			signature:    "fd1437f0e113e62aec51505f430961616ff07febb4a17da203b103a5dc4d7979ae9cecc983ceba819537c7ee6a1e218757098ece0860a01d738cea4bebde0907",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a2b080310d2091880b58e2d20013a1d0801121908c102121402020202020202020202020202020202020202021214bbe457a26f1099b0d75d9965bcac691bbb4ce49a18012240fd1437f0e113e62aec51505f430961616ff07febb4a17da203b103a5dc4d7979ae9cecc983ceba819537c7ee6a1e218757098ece0860a01d738cea4bebde09072801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a2b080310d2091880b58e2d20013a1d0801121908c10212140202020202020202020202020202020202020202",
		},
		"reaction_remove_like": {
			dataBytes:    "080410d2091880b58e2d20013a1d0801121908c10212140202020202020202020202020202020202020202",
			hash:         "8126e4974487b4ca4fff521c5caa2515b292f203",
			signature:    "e3d834c6cb17d477358a40e2ec111205a189d2f36d4dcc7a46f6d1a5dee88e0f668a6327154c8557b303178a80a9c1c70e26c94c617f0681d293d6d72c064f06",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a2b080410d2091880b58e2d20013a1d0801121908c1021214020202020202020202020202020202020202020212148126e4974487b4ca4fff521c5caa2515b292f20318012240e3d834c6cb17d477358a40e2ec111205a189d2f36d4dcc7a46f6d1a5dee88e0f668a6327154c8557b303178a80a9c1c70e26c94c617f0681d293d6d72c064f062801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a2b080410d2091880b58e2d20013a1d0801121908c10212140202020202020202020202020202020202020202",
		},
		"link_add_follow": {
			dataBytes:    "080510d2091880b58e2d2001720b0a06666f6c6c6f7718c803",
			hash:         "17e218e50051a6fc3f2e37431f1d981624e42b0a",
			signature:    "da44df7bc0723fa5365539871d0f73bc656362ba0c091be5d66031a7bbc868b83dd229bf2e490b709c3888fbc3eb28e1c258726b8c3b577937bce3616d576103",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a19080510d2091880b58e2d2001720b0a06666f6c6c6f7718c803121417e218e50051a6fc3f2e37431f1d981624e42b0a18012240da44df7bc0723fa5365539871d0f73bc656362ba0c091be5d66031a7bbc868b83dd229bf2e490b709c3888fbc3eb28e1c258726b8c3b577937bce3616d5761032801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a19080510d2091880b58e2d2001720b0a06666f6c6c6f7718c803",
		},
		"link_remove_follow": {
			dataBytes:    "080610d2091880b58e2d2001720b0a06666f6c6c6f7718c803",
			hash:         "1fe5ec1ebf33898d74c9cc106403784d14c48862",
			signature:    "f8aa33e288b6a9e30d5f813e8aad2ace7e98de9f512325e8a79f0d58b95a4d89cbc6ec8cdb99d231fb1a2f3934846071bca2eb44080c1a10a3aa6b8a377b8405",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a19080610d2091880b58e2d2001720b0a06666f6c6c6f7718c80312141fe5ec1ebf33898d74c9cc106403784d14c4886218012240f8aa33e288b6a9e30d5f813e8aad2ace7e98de9f512325e8a79f0d58b95a4d89cbc6ec8cdb99d231fb1a2f3934846071bca2eb44080c1a10a3aa6b8a377b84052801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a19080610d2091880b58e2d2001720b0a06666f6c6c6f7718c803",
		},
		"link_add_block": {
			dataBytes:    "080510d2091880b58e2d2001720a0a05626c6f636b18c803",
			hash:         "19bf0e1acf2f4cfafa0a8722e589f0dfe45e47c9",
			signature:    "c271828c1e27647747f541e77f2812e39d1f41d000b18966e7bb5549ae2d8262c96c1138d5cebd876a1251229172845b4b76cae2d5332b613c934595b8f83900",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a18080510d2091880b58e2d2001720a0a05626c6f636b18c803121419bf0e1acf2f4cfafa0a8722e589f0dfe45e47c918012240c271828c1e27647747f541e77f2812e39d1f41d000b18966e7bb5549ae2d8262c96c1138d5cebd876a1251229172845b4b76cae2d5332b613c934595b8f839002801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a18080510d2091880b58e2d2001720a0a05626c6f636b18c803",
		},
		"link_remove_block": {
			dataBytes:    "080610d2091880b58e2d2001720a0a05626c6f636b18c803",
			hash:         "6a421224be7f4bfc65f53e702f4caf27ac85888a",
			signature:    "b3bcaaf934d0e56ab9904d75795ea1a3e12909cb0321813032eb51a63d617c9acfcc4446af79d6038fa6c5227e91222475d06faceabb79ac797894467e770408",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a18080610d2091880b58e2d2001720a0a05626c6f636b18c80312146a421224be7f4bfc65f53e702f4caf27ac85888a18012240b3bcaaf934d0e56ab9904d75795ea1a3e12909cb0321813032eb51a63d617c9acfcc4446af79d6038fa6c5227e91222475d06faceabb79ac797894467e7704082801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a18080610d2091880b58e2d2001720a0a05626c6f636b18c803",
		},
		"link_compact_state_follow": {
			dataBytes:    "080e10d2091880b58e2d20018a010c0a06666f6c6c6f771202c803",
			hash:         "6f6b7d0748c079186da2b91fafbcde7bd6ea0949",
			signature:    "227c1229c65c15fce22f71c49797f786c9847b0da08082e0d3b67c1dbe3eed4408fa2b49e00c5a430f0f19cf6b1e4cb5321fe5a1a521b325dc3cab1d8fff7b06",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a1b080e10d2091880b58e2d20018a010c0a06666f6c6c6f771202c80312146f6b7d0748c079186da2b91fafbcde7bd6ea094918012240227c1229c65c15fce22f71c49797f786c9847b0da08082e0d3b67c1dbe3eed4408fa2b49e00c5a430f0f19cf6b1e4cb5321fe5a1a521b325dc3cab1d8fff7b062801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a1b080e10d2091880b58e2d20018a010c0a06666f6c6c6f771202c803",
		},
		"user_data_add_display": {
			dataBytes:    "080b10d2091880b58e2d2001620d08021209546573742055736572",
			hash:         "60ee272dd458e0cf081bc3db81a16b26cd56b048",
			signature:    "32787cd875d76c739bdf5e1e4be40fd7552a3dcf5b2cfcb683512cc4469cb831bc3fc88d9a33ce784058455eedbb1d5b01c024cdc598328c9cd656e139c86802",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a1b080b10d2091880b58e2d2001620d08021209546573742055736572121460ee272dd458e0cf081bc3db81a16b26cd56b0481801224032787cd875d76c739bdf5e1e4be40fd7552a3dcf5b2cfcb683512cc4469cb831bc3fc88d9a33ce784058455eedbb1d5b01c024cdc598328c9cd656e139c868022801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a1b080b10d2091880b58e2d2001620d08021209546573742055736572",
		},
		"verification_add_eth": {
			dataBytes:    "080710d2091880b58e2d20014a7b0a140303030303030303030303030303030303030303124105050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505051a200404040404040404040404040404040404040404040404040404040404040404",
			hash:         "d0d99255fd8eff839e793a515e5917b003033e31",
			signature:    "76a515539e0dc74ee8ce87aadf0a52120ef879bf4fb0f0a23b37d2e08a5ae41dffadefec70ccde335fab0a196add6f18972b28e46ece35995365426a0904d706",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a8901080710d2091880b58e2d20014a7b0a140303030303030303030303030303030303030303124105050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505051a2004040404040404040404040404040404040404040404040404040404040404041214d0d99255fd8eff839e793a515e5917b003033e311801224076a515539e0dc74ee8ce87aadf0a52120ef879bf4fb0f0a23b37d2e08a5ae41dffadefec70ccde335fab0a196add6f18972b28e46ece35995365426a0904d7062801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a8901080710d2091880b58e2d20014a7b0a140303030303030303030303030303030303030303124105050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505051a200404040404040404040404040404040404040404040404040404040404040404",
		},
		"key_add_ed25519": {
			dataBytes:    "081010d2091880b58e2d20019a0196030a2069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d710011a411c86bd397e6e6b77fa92a419550c2a868f8665ed61af7e122f98437b536b8b6063bbe8e7752667e5d4303cd940894189d26a2208911d426bc4c0fe289019ef381c20ffc1d72f280132a002000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000004d20000000000000000000000001563915e194d8cfba1943570603f7606a311550800000000000000000000000000000000000000000000000000000000000000800000000000000000000000000000000000000000000000000000000005f5e0ff0000000000000000000000000000000000000000000000000000000000000041df5cadcd4d7f585ddade01de28371dc96bfcd1c1a163c8cb82b429ed4700797963d611356be12d972dc5379ec4d7f297ab498585c832dd6ef9651921992c1b731c0000000000000000000000000000000000000000000000000000000000000038014a0101",
			hash:         "424a282bffbf632f16c9dab34fba7df640d8b6a5",
			signature:    "3a1033a20947d480217b206219d4d6059d03196cae67adaf937666a5c08e98faa4ebb00ac83abc4042a3855a428861336475f47690d14f0edaf4c9bd5488400f",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0aa603081010d2091880b58e2d20019a0196030a2069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d710011a411c86bd397e6e6b77fa92a419550c2a868f8665ed61af7e122f98437b536b8b6063bbe8e7752667e5d4303cd940894189d26a2208911d426bc4c0fe289019ef381c20ffc1d72f280132a002000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000004d20000000000000000000000001563915e194d8cfba1943570603f7606a311550800000000000000000000000000000000000000000000000000000000000000800000000000000000000000000000000000000000000000000000000005f5e0ff0000000000000000000000000000000000000000000000000000000000000041df5cadcd4d7f585ddade01de28371dc96bfcd1c1a163c8cb82b429ed4700797963d611356be12d972dc5379ec4d7f297ab498585c832dd6ef9651921992c1b731c0000000000000000000000000000000000000000000000000000000000000038014a01011214424a282bffbf632f16c9dab34fba7df640d8b6a5180122403a1033a20947d480217b206219d4d6059d03196cae67adaf937666a5c08e98faa4ebb00ac83abc4042a3855a428861336475f47690d14f0edaf4c9bd5488400f2801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73aa603081010d2091880b58e2d20019a0196030a2069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d710011a411c86bd397e6e6b77fa92a419550c2a868f8665ed61af7e122f98437b536b8b6063bbe8e7752667e5d4303cd940894189d26a2208911d426bc4c0fe289019ef381c20ffc1d72f280132a002000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000004d20000000000000000000000001563915e194d8cfba1943570603f7606a311550800000000000000000000000000000000000000000000000000000000000000800000000000000000000000000000000000000000000000000000000005f5e0ff0000000000000000000000000000000000000000000000000000000000000041df5cadcd4d7f585ddade01de28371dc96bfcd1c1a163c8cb82b429ed4700797963d611356be12d972dc5379ec4d7f297ab498585c832dd6ef9651921992c1b731c0000000000000000000000000000000000000000000000000000000000000038014a0101",
		},
		"key_remove_custody": {
			dataBytes:    "081110d2091880b58e2d2001a2016e0a20060606060606060606060606060606060606060606060606060606060606060612419a7ae0a0284747b8fab028499bfb9195b8f60dd317160c754dbee389356264dc4e225cf4c89b88a05ba0895c91b18da433c7acb24607444ba562cf86ada39e3a1c180120ffc1d72f2802",
			hash:         "7f9231b62f033121a5c3fff3d7e2a560c9b27cba",
			signature:    "6253fa5af0b1543e4524b806b61d037a46a4f55e4fb8487306027c2a8462fd1ce951ddc6ff0ad76ddc51ff3bd06c81b8e3372013bdb45e3e139d1c3173c99208",
			signer:       "69104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d7",
			messageBytes: "0a7d081110d2091880b58e2d2001a2016e0a20060606060606060606060606060606060606060606060606060606060606060612419a7ae0a0284747b8fab028499bfb9195b8f60dd317160c754dbee389356264dc4e225cf4c89b88a05ba0895c91b18da433c7acb24607444ba562cf86ada39e3a1c180120ffc1d72f280212147f9231b62f033121a5c3fff3d7e2a560c9b27cba180122406253fa5af0b1543e4524b806b61d037a46a4f55e4fb8487306027c2a8462fd1ce951ddc6ff0ad76ddc51ff3bd06c81b8e3372013bdb45e3e139d1c3173c992082801322069104ef20c6676aacc9e8c291800d1b7e911e20f85b4066156ea118ace44b8d73a7d081110d2091880b58e2d2001a2016e0a20060606060606060606060606060606060606060606060606060606060606060612419a7ae0a0284747b8fab028499bfb9195b8f60dd317160c754dbee389356264dc4e225cf4c89b88a05ba0895c91b18da433c7acb24607444ba562cf86ada39e3a1c180120ffc1d72f2802",
		},
	}
}
