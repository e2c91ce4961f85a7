package oauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mcpcage/mcpcage/daemon/secrets"
)

// Actor signs the actor tokens of token exchange (RFC 8693 §2.1): a
// short-lived JWT, signed with the daemon's Ed25519 key, whose subject
// is the agent. An authorization server that trusts the daemon's key
// (`mcpcage jwks`) issues tokens with an act claim naming the agent.
type Actor struct {
	key    ed25519.PrivateKey
	kid    string
	issuer string
}

// actorKeyName names the key in its store.
const actorKeyName = "actor-key"

// actorTokenLife bounds an actor token: it is used once, at once.
const actorTokenLife = 5 * time.Minute

// LoadActor reads the daemon's signing key from store, making one the
// first time; issuer is the iss of its tokens.
func LoadActor(store *secrets.Store, issuer string) (*Actor, error) {
	v, err := store.Get(actorKeyName)
	var key ed25519.PrivateKey
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("actor key: %w", err)
		}
		if err := store.Set(actorKeyName, base64.StdEncoding.EncodeToString(key.Seed())); err != nil {
			return nil, fmt.Errorf("actor key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("actor key: %w", err)
	default:
		seed, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("actor key in %s is damaged: remove it to make a new one (authorization servers must then trust the new mcpcage jwks)", actorKeyName)
		}
		key = ed25519.NewKeyFromSeed(seed)
	}
	jwk := jose.JSONWebKey{Key: key.Public(), Algorithm: string(jose.EdDSA), Use: "sig"}
	tp, err := jwk.Thumbprint(cryptoSHA256)
	if err != nil {
		return nil, err
	}
	return &Actor{key: key, kid: base64.RawURLEncoding.EncodeToString(tp), issuer: issuer}, nil
}

// Issuer is the iss of the actor tokens.
func (a *Actor) Issuer() string { return a.issuer }

// JWKS is the public key set an authorization server trusts to verify
// actor tokens.
func (a *Actor) JWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: a.key.Public(), KeyID: a.kid, Algorithm: string(jose.EdDSA), Use: "sig"}}}
	return json.MarshalIndent(set, "", "  ")
}

// ActorClaims are what an actor token says about the agent.
type ActorClaims struct {
	Agent string `json:"sub"`
	// The agent's executable and its digest, as the kernel showed them.
	Exe    string `json:"mcpcage_exe,omitempty"`
	SHA256 string `json:"mcpcage_exe_sha256,omitempty"`
	User   string `json:"mcpcage_delegator,omitempty"`
}

// Token signs an actor token for audience (the authorization server's
// issuer).
func (a *Actor) Token(c ActorClaims, audience string) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: a.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", a.kid))
	if err != nil {
		return "", err
	}
	now := time.Now()
	std := jwt.Claims{Issuer: a.issuer, Subject: c.Agent, Audience: jwt.Audience{audience}, IssuedAt: jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-30 * time.Second)), Expiry: jwt.NewNumericDate(now.Add(actorTokenLife)), ID: randomString()[:22]}
	return jwt.Signed(sig).Claims(std).Claims(c).Serialize()
}
