package devnet

import (
	"encoding/hex"
	"math/big"
	"strings"

	"golang.org/x/crypto/sha3"
)

// words the workload writes casts from: ASCII, accented Latin, CJK, RTL and
// Cyrillic script, emoji with skin tones, ZWJ sequences and flags, so that
// byte offsets and character counts differ.
var words = []string{
	"gm", "gn", "the", "a", "frame", "onchain", "cast", "channel", "builders", "shipping",
	"today", "tomorrow", "protocol", "decentralized", "social", "network", "wow", "nice", "ok", "lol",
	"café", "naïve", "façade", "über", "jalapeño", "smörgåsbord", "crème", "brûlée",
	"日本語", "こんにちは", "中文", "한국어", "مرحبا", "שלום", "Привет", "Ελληνικά", "हिन्दी",
	"🚀", "🔥", "💜", "👍🏽", "👩‍💻", "🏳️‍🌈", "🇺🇸", "🇯🇵", "🫡", "🎩", "😂", "🤝", "⚡️", "🌊",
	"$DEGEN", "#farcaster", "0x1234…abcd", "e=mc²", "∑∞", "→", "«quote»", "“smart”", "tab\tinside",
}

var channels = []string{
	"https://farcaster.xyz/~/channel/devnet",
	"https://warpcast.com/~/channel/dev",
	"https://farcaster.xyz/~/channel/music",
	"chain://eip155:1/erc721:0xa45662638e9f3bbb7a6fecb4b17853b7ba0f3a60",
	"https://example.com/forum/thread/42",
}

var syllables = []string{"ka", "lo", "mi", "zu", "ra", "ne", "to", "vi", "sa", "qu", "ex", "po"}

// base58 encodes b with the Bitcoin alphabet, as Solana addresses are
// written.
func base58(b []byte) string {
	const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	n := new(big.Int).SetBytes(b)
	radix := big.NewInt(58)
	mod := new(big.Int)
	var out []byte
	for n.Sign() > 0 {
		n.DivMod(n, radix, mod)
		out = append(out, alphabet[mod.Int64()])
	}
	for _, c := range b {
		if c != 0 {
			break
		}
		out = append(out, '1')
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}

// checksumAddress writes a 20-byte Ethereum address in EIP-55 mixed case,
// the form primary-address user data carries.
func checksumAddress(addr []byte) string {
	lower := hex.EncodeToString(addr)
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(lower))
	sum := h.Sum(nil)
	var sb strings.Builder
	sb.WriteString("0x")
	for i, c := range lower {
		nibble := sum[i/2]
		if i%2 == 0 {
			nibble >>= 4
		}
		if c >= 'a' && nibble&0xf >= 8 {
			c -= 'a' - 'A'
		}
		sb.WriteRune(c)
	}
	return sb.String()
}
