package netguard

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Every non-public range of the IANA special-purpose registries is
// refused, at its first and last address, in every form that carries an
// IPv4; public addresses, and embeddings of public IPv4s, pass.
func TestPublicAddrTable(t *testing.T) {
	refused := []string{
		// IPv4
		"0.0.0.0", "0.0.0.1", "0.255.255.255", // 0.0.0.0/8
		"10.0.0.0", "10.255.255.255",
		"100.64.0.0", "100.127.255.255",
		"127.0.0.1", "127.255.255.255",
		"169.254.0.0", "169.254.169.254", "169.254.255.255",
		"172.16.0.0", "172.31.255.255",
		"192.0.0.0", "192.0.0.255",
		"192.0.2.0", "192.0.2.255",
		"192.88.99.0", "192.88.99.255",
		"192.168.0.0", "192.168.255.255",
		"198.18.0.0", "198.19.255.255",
		"198.51.100.0", "198.51.100.255",
		"203.0.113.0", "203.0.113.255",
		"224.0.0.0", "224.0.0.1", "239.255.255.255", // 224/4
		"240.0.0.0", "254.255.255.255", // 240/4
		"255.255.255.255",
		// IPv6
		"::", "::1",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:0.0.0.1", "::ffff:169.254.169.254", // IPv4-mapped
		"::127.0.0.1", "::10.0.0.1", "::0.0.0.1", "::240.0.0.1", // IPv4-compatible
		"64:ff9b::a01:203", "64:ff9b::127.0.0.1", "64:ff9b::192.168.1.1", "64:ff9b::0.0.0.0", // NAT64 embedding a private IPv4
		"64:ff9b:1::", "64:ff9b:1::8.8.8.8", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", // local-use NAT64
		"100::", "100::ffff:ffff:ffff:ffff", // discard-only
		"2001::", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", // 2001::/23, Teredo
		"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
		"2002:7f00:1::", "2002:a00:1::1", "2002:c0a8:101::", "2002::", // 6to4 embedding a private IPv4
		"fc00::", "fd12:3456::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fe80::", "fe80::1", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fec0::", "fec0::1", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"ff00::", "ff02::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fe80::1%eth0",
	}
	public := []string{
		"1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
		"192.0.1.255", "192.88.98.255", "198.17.255.255", "198.20.0.0", "223.255.255.255", "11.0.0.0", "1.0.0.0",
		"2606:2800:220:1::1", "2a00:1450:4001:80b::200e", "2001:200::1", "2001:4860:4860::8888",
		"::ffff:8.8.8.8", "::8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
	}
	for _, s := range refused {
		assert.False(t, PublicAddr(netip.MustParseAddr(s)), "%s must be refused", s)
	}
	for _, s := range public {
		assert.True(t, PublicAddr(netip.MustParseAddr(s)), "%s is public", s)
	}
	assert.False(t, PublicAddr(netip.Addr{}), "the zero Addr")
}

func TestControlRefusesAfterResolution(t *testing.T) {
	assert.ErrorIs(t, Control("tcp", "127.0.0.1:80", nil), ErrNotPublic)
	assert.ErrorIs(t, Control("tcp", "[::ffff:10.0.0.1]:443", nil), ErrNotPublic)
	assert.ErrorIs(t, Control("tcp", "not an address", nil), ErrNotPublic)
	assert.NoError(t, Control("tcp", "8.8.8.8:443", nil))
}

func TestLocalAddr(t *testing.T) {
	for s, local := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "192.168.0.1": true, "fd00::1": true, "::ffff:127.0.0.1": true,
		"8.8.8.8": false, "169.254.169.254": false, "0.0.0.0": false, "100.64.0.1": false, "fe80::1": false,
	} {
		assert.Equal(t, local, LocalAddr(netip.MustParseAddr(s)), s)
	}
}

func TestLoopbackHost(t *testing.T) {
	for h, ok := range map[string]bool{
		"localhost": true, "localhost:8787": true, "LOCALHOST.": true, "app.localhost:1": true,
		"127.0.0.1": true, "127.0.0.1:8787": true, "127.9.9.9:1": true, "[::1]:8787": true, "[::1]": true, "::1": true,
		"evil.example": false, "evil.example:8787": false, "localhost.evil.example": false, "0.0.0.0:8787": false,
		"10.0.0.1:8787": false, "": false, "[::ffff:8.8.8.8]:80": false, "127.0.0.1.evil.example": false,
	} {
		assert.Equal(t, ok, LoopbackHost(h), "%q", h)
	}
}
