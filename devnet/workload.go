package devnet

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// action is one thing the workload submits: a message (hashed, signed by
// signActions when signer is set), an on-chain event, an fname proof, or a
// re-merge of an earlier message of fid.
type action struct {
	msg     *pb.Message
	signer  *Signer
	onchain *pb.OnChainEvent
	proof   *pb.UserNameProof
	remerge *pb.Message
	fid     uint64
}

// generator draws a deterministic workload: everything it produces is a
// function of the options (seed, fids, start) and of how many steps were
// drawn, never of the wall clock or of merge outcomes.
type generator struct {
	opts       Options
	rng        *rand.Rand
	zipf       *rand.Zipf
	users      []*genUser
	casts      []*pb.CastId // recent casts across the network
	castNext   int
	chainBlock uint32
	logIndex   uint32
	txSeq      uint64
	proofTs    map[string]uint64
}

type castRec struct {
	hash []byte
	ts   uint32
}

type reactRec struct {
	t      pb.ReactionType
	target *pb.CastId
	ts     uint32
}

type verifRec struct {
	p    pb.Protocol
	addr []byte
}

type genUser struct {
	fid       uint64
	onboarded bool
	signer    *Signer
	custody   []byte
	fname     string
	renames   int
	casts     []castRec
	reactions []reactRec
	follows   []uint64
	followTs  map[uint64]uint32
	verifs    []verifRec
	verifSeq  uint64
	primary   string
	keys      [][]byte
	keySeq    uint64
	lendTo    uint64
	recent    []*pb.Message
}

func newGenerator(opts Options) *generator {
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	g := &generator{opts: opts, rng: rng, proofTs: make(map[string]uint64)}
	if opts.FIDs > 1 {
		g.zipf = rand.NewZipf(rng, 1.2, 4, uint64(opts.FIDs-1))
	}
	g.users = make([]*genUser, opts.FIDs)
	return g
}

// user returns the i-th simulated user, creating it on first use so that a
// large fid space costs nothing until it is drawn.
func (g *generator) user(i int) *genUser {
	u := g.users[i]
	if u == nil {
		fid := uint64(i + 1)
		u = &genUser{fid: fid, custody: g.derive("custody", fid)[:20], followTs: make(map[uint64]uint32)}
		g.users[i] = u
	}
	return u
}

// derive returns 32 deterministic bytes for a label and numbers.
func (g *generator) derive(label string, nums ...uint64) []byte {
	b := make([]byte, 0, len(label)+8*(len(nums)+1))
	b = append(b, label...)
	b = binary.BigEndian.AppendUint64(b, g.opts.Seed)
	for _, n := range nums {
		b = binary.BigEndian.AppendUint64(b, n)
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

func (g *generator) pick() *genUser {
	if g.zipf == nil {
		return g.user(0)
	}
	// Zipf makes a few heavy users that reach their storage limits (and
	// get pruned) while the long tail stays small; a permutation spreads the
	// heavy ones over both shards.
	i := g.zipf.Uint64()
	return g.user(int((i * 7919) % uint64(len(g.users))))
}

func (g *generator) other(u *genUser) *genUser {
	if len(g.users) == 1 {
		return u
	}
	for {
		o := g.user(g.rng.IntN(len(g.users)))
		if o != u {
			return o
		}
	}
}

// step draws the next workload step at the given clock offset.
func (g *generator) step(clock time.Duration) []action {
	now := g.opts.Start.Add(clock)
	u := g.pick()
	if !u.onboarded {
		return g.onboard(u, now)
	}
	ts := g.ts(now)
	r := g.rng.IntN(1000)
	switch {
	case r < 30 && len(u.casts) > 0:
		return g.castRemove(u, ts)
	case r < 35:
		return g.removeBeforeAdd(u, ts)
	case r < 215:
		return g.reactionAdd(u, ts)
	case r < 255 && len(u.reactions) > 0:
		return g.reactionRemove(u, ts)
	case r < 355:
		return g.linkAdd(u, ts)
	case r < 385 && len(u.follows) > 0:
		return g.linkRemove(u, ts)
	case r < 435:
		return g.userData(u, ts)
	case r < 460:
		return g.verificationAdd(u, ts)
	case r < 470 && len(u.verifs) > 0:
		return g.verificationRemove(u, ts)
	case r < 480 && len(u.verifs) > 0:
		return g.primaryAddress(u, ts)
	case r < 488:
		return g.fname(u, now, ts)
	case r < 493 && len(u.follows) > 1:
		return g.compact(u, ts)
	case r < 498 && len(g.users) > 1:
		return g.lend(u, ts)
	case r < 503:
		return g.keyAdd(u, ts)
	case r < 505 && len(u.keys) > 0:
		return g.keyRemove(u, ts)
	case r < 525 && len(u.recent) > 0:
		// A duplicate: the same message submitted again.
		return []action{{msg: u.recent[g.rng.IntN(len(u.recent))]}}
	case r < 535 && len(u.recent) > 0:
		return []action{{remerge: u.recent[g.rng.IntN(len(u.recent))], fid: u.fid}}
	case r < 538:
		return []action{g.storageRent(u, now, 1)}
	}
	return g.castAdd(u, ts)
}

// ts is the message timestamp for now: usually now, sometimes a little in
// the past, as clients' clocks and queues make it.
func (g *generator) ts(now time.Time) uint32 {
	ts := message.Timestamp(now)
	if g.rng.IntN(10) == 0 {
		j := uint32(1 + g.rng.IntN(20))
		if ts > j {
			ts -= j
		}
	}
	return ts
}

func (g *generator) msg(u *genUser, mt pb.MessageType, ts uint32, body func(*pb.MessageData)) action {
	d := &pb.MessageData{Type: mt, Fid: u.fid, Timestamp: ts, Network: g.opts.Network}
	body(d)
	m := u.signer.hashed(d)
	u.recent = appendCapped(u.recent, m, 4)
	return action{msg: m, signer: u.signer}
}

func appendCapped[T any](s []T, v T, n int) []T {
	if len(s) >= n {
		s = append(s[:0], s[1:]...)
	}
	return append(s, v)
}

func (g *generator) chain(fid uint64, now time.Time, t pb.OnChainEventType) *pb.OnChainEvent {
	g.logIndex++
	if g.logIndex > 3 {
		g.chainBlock++
		g.logIndex = 0
	}
	g.txSeq++
	return &pb.OnChainEvent{
		Type:            t,
		ChainId:         10,
		BlockNumber:     130_000_000 + g.chainBlock,
		BlockHash:       g.derive("block", uint64(g.chainBlock)),
		BlockTimestamp:  uint64(now.Unix()),
		TransactionHash: g.derive("tx", g.txSeq),
		LogIndex:        g.logIndex,
		Fid:             fid,
		TxIndex:         uint32(g.txSeq % 50),
		Version:         2,
	}
}

func (g *generator) storageRent(u *genUser, now time.Time, units uint32) action {
	ev := g.chain(u.fid, now, pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT)
	ev.Body = &pb.OnChainEvent_StorageRentEventBody{StorageRentEventBody: &pb.StorageRentEventBody{
		Payer: u.custody, Units: units, Expiry: uint32(now.Add(365 * 24 * time.Hour).Unix()),
	}}
	return action{onchain: ev}
}

// onboard registers a user as the chain and the fname server would before
// any of its messages: id, signer key, storage, tier, fname, profile.
func (g *generator) onboard(u *genUser, now time.Time) []action {
	u.onboarded = true
	u.signer = NewSigner(g.opts.Seed<<20 ^ u.fid).WithNetwork(g.opts.Network)
	reg := g.chain(u.fid, now, pb.OnChainEventType_EVENT_TYPE_ID_REGISTER)
	reg.Body = &pb.OnChainEvent_IdRegisterEventBody{IdRegisterEventBody: &pb.IdRegisterEventBody{
		To: u.custody, EventType: pb.IdRegisterEventType_ID_REGISTER_EVENT_TYPE_REGISTER, RecoveryAddress: g.derive("recovery", u.fid)[:20],
	}}
	signer := g.chain(u.fid, now, pb.OnChainEventType_EVENT_TYPE_SIGNER)
	signer.Body = &pb.OnChainEvent_SignerEventBody{SignerEventBody: &pb.SignerEventBody{
		Key: u.signer.PublicKey(), KeyType: 1, EventType: pb.SignerEventType_SIGNER_EVENT_TYPE_ADD,
		Metadata: append(g.derive("metadata", u.fid), g.derive("metadata2", u.fid)...), MetadataType: 1,
	}}
	units := uint32(1)
	if g.rng.IntN(4) == 0 {
		units = 2
	}
	tier := g.chain(u.fid, now, pb.OnChainEventType_EVENT_TYPE_TIER_PURCHASE)
	tier.Body = &pb.OnChainEvent_TierPurchaseEventBody{TierPurchaseEventBody: &pb.TierPurchaseBody{
		TierType: pb.TierType_Pro, ForDays: 30, Payer: u.custody,
	}}
	plan := []action{{onchain: reg}, {onchain: signer}, g.storageRent(u, now, units), {onchain: tier}}
	ts := message.Timestamp(now)
	u.fname = g.newName(u)
	plan = append(plan, action{proof: g.proof(u.fname, u, now)})
	plan = append(plan, g.msg(u, pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, ts, userDataBody(pb.UserDataType_USER_DATA_TYPE_USERNAME, u.fname)))
	for _, t := range []pb.UserDataType{pb.UserDataType_USER_DATA_TYPE_DISPLAY, pb.UserDataType_USER_DATA_TYPE_PFP, pb.UserDataType_USER_DATA_TYPE_BIO} {
		plan = append(plan, g.msg(u, pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, ts, userDataBody(t, g.userDataValue(u, t))))
	}
	return plan
}

func userDataBody(t pb.UserDataType, v string) func(*pb.MessageData) {
	return func(d *pb.MessageData) {
		d.Body = &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{Type: t, Value: v}}
	}
}

func (g *generator) newName(u *genUser) string {
	u.renames++
	s := syllables[g.rng.IntN(len(syllables))] + syllables[g.rng.IntN(len(syllables))]
	name := fmt.Sprintf("%s%d", s, u.fid)
	if u.renames > 1 {
		name = fmt.Sprintf("%s%dr%d", s, u.fid, u.renames)
	}
	if len(name) > 16 {
		name = name[len(name)-16:]
	}
	return name
}

// proof builds the fname server's proof that name belongs to u (nil u
// deletes it), with a timestamp after any earlier proof for the name.
func (g *generator) proof(name string, u *genUser, now time.Time) *pb.UserNameProof {
	ts := uint64(now.Unix())
	if last := g.proofTs[name]; ts <= last {
		ts = last + 1
	}
	g.proofTs[name] = ts
	if u == nil {
		return FnameProof(name, 0, ts, nil)
	}
	return FnameProof(name, u.fid, ts, u.custody)
}

func (g *generator) userDataValue(u *genUser, t pb.UserDataType) string {
	n := g.rng.IntN(1000)
	switch t {
	case pb.UserDataType_USER_DATA_TYPE_DISPLAY:
		return fmt.Sprintf("%s %s", strings.ToUpper(u.fname[:1])+u.fname[1:], words[g.rng.IntN(len(words))])
	case pb.UserDataType_USER_DATA_TYPE_PFP:
		return fmt.Sprintf("https://i.example.com/pfp/%d/%d.png", u.fid, n)
	case pb.UserDataType_USER_DATA_TYPE_BIO:
		return g.text(20, 200)
	case pb.UserDataType_USER_DATA_TYPE_URL:
		return fmt.Sprintf("https://%s.example.org", u.fname)
	case pb.UserDataType_USER_DATA_TYPE_LOCATION:
		return fmt.Sprintf("geo:%.2f,%.2f", float64(n%180)-90+0.25, float64(n%360)-180+0.5)
	case pb.UserDataType_USER_DATA_TYPE_TWITTER, pb.UserDataType_USER_DATA_TYPE_GITHUB:
		return fmt.Sprintf("%s_%d", u.fname, n%100)
	case pb.UserDataType_USER_DATA_TYPE_BANNER:
		return fmt.Sprintf("https://i.example.com/banner/%d/%d.jpg", u.fid, n)
	}
	return ""
}

// text returns words joined up to between min and max bytes.
func (g *generator) text(minBytes, maxBytes int) string {
	target := minBytes + g.rng.IntN(maxBytes-minBytes+1)
	var sb strings.Builder
	for sb.Len() < target {
		w := words[g.rng.IntN(len(words))]
		if sb.Len()+len(w)+1 > maxBytes {
			break
		}
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(w)
	}
	return sb.String()
}

func (g *generator) castBody(u *genUser) *pb.CastAddBody {
	b := &pb.CastAddBody{}
	maxBytes := 320
	switch r := g.rng.IntN(1000); {
	case r < 2:
		b.Type, maxBytes = pb.CastType_TEN_K_CAST, 10000
		b.Text = g.text(1025, maxBytes)
	case r < 50:
		b.Type, maxBytes = pb.CastType_LONG_CAST, 1024
		b.Text = g.text(321, maxBytes)
	default:
		b.Text = g.text(1, 200)
	}
	// Mentions sit between words: the text leaves a gap where the client
	// renders @name, and positions are byte offsets into the text.
	if g.rng.IntN(5) == 0 {
		n := 1 + g.rng.IntN(2)
		for range n {
			pos := 0
			if len(b.Text) > 0 {
				spaces := []int{0}
				for i := 0; i < len(b.Text); i++ {
					if b.Text[i] == ' ' {
						spaces = append(spaces, i+1)
					}
				}
				spaces = append(spaces, len(b.Text))
				pos = spaces[g.rng.IntN(len(spaces))]
			}
			if k := len(b.MentionsPositions); k > 0 && uint32(pos) < b.MentionsPositions[k-1] {
				pos = int(b.MentionsPositions[k-1])
			}
			b.Mentions = append(b.Mentions, g.other(u).fid)
			b.MentionsPositions = append(b.MentionsPositions, uint32(pos))
		}
	}
	if g.rng.IntN(4) == 0 {
		b.Embeds = append(b.Embeds, &pb.Embed{Embed: &pb.Embed_Url{Url: fmt.Sprintf("https://example.com/post/%d?ref=devnet", g.rng.IntN(100000))}})
	}
	if len(g.casts) > 0 && g.rng.IntN(10) == 0 {
		c := g.casts[g.rng.IntN(len(g.casts))]
		b.Embeds = append(b.Embeds, &pb.Embed{Embed: &pb.Embed_CastId{CastId: c}})
	}
	switch r := g.rng.IntN(100); {
	case r < 15 && len(g.casts) > 0:
		b.Parent = &pb.CastAddBody_ParentCastId{ParentCastId: g.casts[g.rng.IntN(len(g.casts))]}
	case r < 25:
		b.Parent = &pb.CastAddBody_ParentUrl{ParentUrl: channels[g.rng.IntN(len(channels))]}
	}
	return b
}

func (g *generator) buildCast(u *genUser, ts uint32) action {
	b := g.castBody(u)
	a := g.msg(u, pb.MessageType_MESSAGE_TYPE_CAST_ADD, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_CastAddBody{CastAddBody: b}
	})
	id := &pb.CastId{Fid: u.fid, Hash: a.msg.Hash}
	if len(g.casts) < 256 {
		g.casts = append(g.casts, id)
	} else {
		g.casts[g.castNext] = id
		g.castNext = (g.castNext + 1) % 256
	}
	u.casts = appendCapped(u.casts, castRec{hash: a.msg.Hash, ts: ts}, 32)
	return a
}

func (g *generator) castAdd(u *genUser, ts uint32) []action {
	return []action{g.buildCast(u, ts)}
}

func (g *generator) castRemove(u *genUser, ts uint32) []action {
	i := g.rng.IntN(len(u.casts))
	c := u.casts[i]
	u.casts = append(u.casts[:i], u.casts[i+1:]...)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_CAST_REMOVE, max(ts, c.ts), func(d *pb.MessageData) {
		d.Body = &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: c.hash}}
	})}
}

// removeBeforeAdd delivers a cast's remove ahead of the cast, as an
// out-of-order client does; the node then rejects the add.
func (g *generator) removeBeforeAdd(u *genUser, ts uint32) []action {
	add := g.buildCast(u, ts)
	u.casts = u.casts[:len(u.casts)-1]
	rm := g.msg(u, pb.MessageType_MESSAGE_TYPE_CAST_REMOVE, ts+1, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: add.msg.Hash}}
	})
	return []action{rm, add}
}

func (g *generator) reactionAdd(u *genUser, ts uint32) []action {
	t := pb.ReactionType_REACTION_TYPE_LIKE
	if g.rng.IntN(10) < 3 {
		t = pb.ReactionType_REACTION_TYPE_RECAST
	}
	body := &pb.ReactionBody{Type: t}
	if len(g.casts) == 0 || g.rng.IntN(20) == 0 {
		body.Target = &pb.ReactionBody_TargetUrl{TargetUrl: fmt.Sprintf("https://example.com/article/%d", g.rng.IntN(50))}
	} else {
		c := g.casts[g.rng.IntN(len(g.casts))]
		body.Target = &pb.ReactionBody_TargetCastId{TargetCastId: c}
		u.reactions = appendCapped(u.reactions, reactRec{t: t, target: c, ts: ts}, 32)
	}
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_REACTION_ADD, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_ReactionBody{ReactionBody: body}
	})}
}

func (g *generator) reactionRemove(u *genUser, ts uint32) []action {
	i := g.rng.IntN(len(u.reactions))
	r := u.reactions[i]
	u.reactions = append(u.reactions[:i], u.reactions[i+1:]...)
	// Sometimes at the add's own timestamp: the tie goes to the remove.
	if g.rng.IntN(3) == 0 || ts < r.ts {
		ts = r.ts
	}
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{Type: r.t, Target: &pb.ReactionBody_TargetCastId{TargetCastId: r.target}}}
	})}
}

func linkBody(t string, target uint64) func(*pb.MessageData) {
	return func(d *pb.MessageData) {
		d.Body = &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{Type: t, Target: &pb.LinkBody_TargetFid{TargetFid: target}}}
	}
}

func (g *generator) linkAdd(u *genUser, ts uint32) []action {
	o := g.other(u)
	if o == u {
		return g.castAdd(u, ts)
	}
	if _, ok := u.followTs[o.fid]; !ok {
		u.follows = append(u.follows, o.fid)
	}
	u.followTs[o.fid] = ts
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_LINK_ADD, ts, linkBody("follow", o.fid))}
}

func (g *generator) linkRemove(u *genUser, ts uint32) []action {
	i := g.rng.IntN(len(u.follows))
	target := u.follows[i]
	u.follows = append(u.follows[:i], u.follows[i+1:]...)
	if at := u.followTs[target]; g.rng.IntN(5) == 0 || ts < at {
		ts = at
	}
	delete(u.followTs, target)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_LINK_REMOVE, ts, linkBody("follow", target))}
}

// compact replaces the user's follows with a compact state that keeps all
// but one of them.
func (g *generator) compact(u *genUser, ts uint32) []action {
	drop := g.rng.IntN(len(u.follows))
	delete(u.followTs, u.follows[drop])
	u.follows = append(u.follows[:drop], u.follows[drop+1:]...)
	targets := append([]uint64(nil), u.follows...)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{Type: "follow", TargetFids: targets}}
	})}
}

var profileTypes = []pb.UserDataType{
	pb.UserDataType_USER_DATA_TYPE_DISPLAY, pb.UserDataType_USER_DATA_TYPE_BIO, pb.UserDataType_USER_DATA_TYPE_PFP,
	pb.UserDataType_USER_DATA_TYPE_URL, pb.UserDataType_USER_DATA_TYPE_LOCATION, pb.UserDataType_USER_DATA_TYPE_TWITTER,
	pb.UserDataType_USER_DATA_TYPE_GITHUB, pb.UserDataType_USER_DATA_TYPE_BANNER,
}

func (g *generator) userData(u *genUser, ts uint32) []action {
	t := profileTypes[g.rng.IntN(len(profileTypes))]
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, ts, userDataBody(t, g.userDataValue(u, t)))}
}

func (g *generator) verificationAdd(u *genUser, ts uint32) []action {
	u.verifSeq++
	v := verifRec{p: pb.Protocol_PROTOCOL_ETHEREUM, addr: g.derive("eth", u.fid, u.verifSeq)[:20]}
	var claim []byte
	if g.rng.IntN(3) == 0 {
		// A Solana address is an Ed25519 public key, and its claim an
		// Ed25519 signature by it.
		key := ed25519.NewKeyFromSeed(g.derive("sol", u.fid, u.verifSeq))
		v = verifRec{p: pb.Protocol_PROTOCOL_SOLANA, addr: key.Public().(ed25519.PublicKey)}
		claim = ed25519.Sign(key, binary.BigEndian.AppendUint64([]byte("devnet verification"), u.fid))
	} else {
		claim = append(g.derive("claim", u.fid, u.verifSeq), g.derive("claim2", u.fid, u.verifSeq)...)
		claim = append(claim[:64], 27+byte(u.verifSeq%2))
	}
	if len(u.verifs) >= 4 {
		u.verifs = u.verifs[1:]
	}
	u.verifs = append(u.verifs, v)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{
			Address: v.addr, ClaimSignature: claim, BlockHash: g.derive("vblock", u.fid, u.verifSeq), Protocol: v.p,
		}}
	})}
}

func (g *generator) verificationRemove(u *genUser, ts uint32) []action {
	i := g.rng.IntN(len(u.verifs))
	v := u.verifs[i]
	u.verifs = append(u.verifs[:i], u.verifs[i+1:]...)
	if u.primary == primaryValue(v) {
		u.primary = ""
	}
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_VerificationRemoveBody{VerificationRemoveBody: &pb.VerificationRemoveBody{Address: v.addr, Protocol: v.p}}
	})}
}

func primaryValue(v verifRec) string {
	if v.p == pb.Protocol_PROTOCOL_SOLANA {
		return base58(v.addr)
	}
	return checksumAddress(v.addr)
}

func (g *generator) primaryAddress(u *genUser, ts uint32) []action {
	v := u.verifs[g.rng.IntN(len(u.verifs))]
	t := pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_ETHEREUM
	if v.p == pb.Protocol_PROTOCOL_SOLANA {
		t = pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_SOLANA
	}
	u.primary = primaryValue(v)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, ts, userDataBody(t, u.primary))}
}

// fname transfers the user's name to a user without one, renames it, or
// claims a new one.
func (g *generator) fname(u *genUser, now time.Time, ts uint32) []action {
	username := func(o *genUser) action {
		return g.msg(o, pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, ts, userDataBody(pb.UserDataType_USER_DATA_TYPE_USERNAME, o.fname))
	}
	if u.fname != "" && g.rng.IntN(2) == 0 {
		for range 8 {
			o := g.other(u)
			if o == u || !o.onboarded || o.fname != "" {
				continue
			}
			o.fname, u.fname = u.fname, ""
			return []action{{proof: g.proof(o.fname, o, now)}, username(o)}
		}
	}
	var plan []action
	if u.fname != "" {
		plan = append(plan, action{proof: g.proof(u.fname, nil, now)})
	}
	u.fname = g.newName(u)
	return append(plan, action{proof: g.proof(u.fname, u, now)}, username(u))
}

func (g *generator) lend(u *genUser, ts uint32) []action {
	to, units := g.other(u).fid, uint64(1)
	if u.lendTo != 0 && g.rng.IntN(5) < 2 {
		to, units = u.lendTo, 0
		u.lendTo = 0
	} else {
		u.lendTo = to
	}
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_LEND_STORAGE, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_LendStorageBody{LendStorageBody: &pb.LendStorageBody{ToFid: to, NumUnits: units, UnitType: pb.StorageUnitType_UNIT_TYPE_2025}}
	})}
}

func (g *generator) keyAdd(u *genUser, ts uint32) []action {
	u.keySeq++
	key := ed25519.NewKeyFromSeed(g.derive("key", u.fid, u.keySeq)).Public().(ed25519.PublicKey)
	u.keys = appendCapped(u.keys, []byte(key), 8)
	sig := append(g.derive("custody-sig", u.fid, u.keySeq), g.derive("custody-sig2", u.fid, u.keySeq)...)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_KEY_ADD, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_KeyAddBody{KeyAddBody: &pb.KeyAddBody{
			Key: key, KeyType: 1, CustodySignature: append(sig[:64], 28), Deadline: ts + 3600,
			Nonce: uint32(u.keySeq), Metadata: g.derive("key-metadata", u.fid, u.keySeq), MetadataType: 1,
		}}
	})}
}

func (g *generator) keyRemove(u *genUser, ts uint32) []action {
	i := g.rng.IntN(len(u.keys))
	key := u.keys[i]
	u.keys = append(u.keys[:i], u.keys[i+1:]...)
	sig := append(g.derive("remove-sig", u.fid, uint64(i)), g.derive("remove-sig2", u.fid, uint64(i))...)
	return []action{g.msg(u, pb.MessageType_MESSAGE_TYPE_KEY_REMOVE, ts, func(d *pb.MessageData) {
		d.Body = &pb.MessageData_KeyRemoveBody{KeyRemoveBody: &pb.KeyRemoveBody{Key: key, Signature: append(sig[:64], 27), SignatureType: 1, Deadline: ts + 3600}}
	})}
}
