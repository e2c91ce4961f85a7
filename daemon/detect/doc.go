// Package detect finds sensitive values in text for the data-flow guard:
// the content detectors it runs on tool results (server to agent) and on
// tool-call arguments (agent to server), and the fingerprints that tell
// when a high-entropy string the agent was shown is sent on.
//
// # Detectors
//
// A Set (New) runs built-in detectors and custom ones (RE2 regular
// expressions from the configuration) over a string; Scan returns
// Findings (detector and byte span, never a copy of the value), Redact
// replaces them with "[redacted:DETECTOR]" and Counts summarises them for
// audit records. Scan reads at most MaxScan (1 MiB) bytes of a text and
// returns at most MaxFindings (256) findings, sorted and non-overlapping.
// The built-ins are hand-written linear scanners anchored on something
// cheap to find (a literal prefix, an '@', a run of digits), and custom
// patterns are RE2, so a scan is linear in the bytes read.
//
// Every detector works on one string as given: a value split across two
// strings (or two JSON values, or two messages), re-encoded (base64, hex,
// URL-escaped, JSON-escaped inside a string, HTML entities), spelled with
// other separators than those listed, written in words ("four one one
// one ...") or in other Unicode digits is not found. "Glued" means
// directly preceded or followed by an ASCII letter or digit (for number
// detectors also '_', or a separator and a digit, as in "1.5" or
// "12-34"): a glued value is part of something longer and not reported.
//
//   - aws_access_key: "AKIA" or "ASIA" followed by exactly 16 capitals or
//     digits, not glued. Other AWS ID prefixes (AIDA, AROA, ...) and secret
//     access keys (40 base64 characters, no prefix) are not detected; the
//     fingerprints catch the latter when a labelled result carried them.
//   - private_key: a PEM header "-----BEGIN <...>PRIVATE KEY-----" (RSA,
//     EC, DSA, OPENSSH, ENCRYPTED, plain PKCS#8) or "-----BEGIN PGP
//     PRIVATE KEY BLOCK-----". The finding covers the block through its
//     END line when one comes within 16 KiB, else the header and the
//     base64 body after it (the header alone counts). Public keys and
//     certificates are not reported; base64 DER without the header is
//     not detected.
//   - github_token: "ghp_", "gho_", "ghu_", "ghs_" or "ghr_" followed by
//     36 to 255 letters and digits, and "github_pat_" followed by 22 to 255
//     of [A-Za-z0-9_]; not preceded by a letter or digit. The checksum is
//     not verified. Old 40-hex OAuth tokens are not detected.
//   - slack_token: "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxr-" or "xoxs-"
//     followed by 10 to 255 of [A-Za-z0-9-] with at least one digit. App
//     tokens (xapp-) and webhook URLs are not detected.
//   - api_key: "sk-" followed by 20 to 255 of [A-Za-z0-9_-] holding a
//     letter and a digit, not preceded by [A-Za-z0-9_-] (OpenAI sk-...,
//     sk-proj-..., Anthropic sk-ant-...; so "task-..." or a kebab-case
//     name without digits is not one); Stripe live keys "sk_live_" and
//     "rk_live_" followed by 16 to 255 letters and digits (test keys are
//     not reported); Google API keys "AIza" followed by exactly 35 of
//     [A-Za-z0-9_-]. Other vendors' keys are not detected: add custom
//     detectors.
//   - jwt: three base64url segments joined by '.', the first two starting
//     "eyJ" (a JSON object) and at least 10 characters long; the
//     signature may be empty (alg "none"). Five-segment JWE tokens are not
//     reported; the segments are not decoded.
//   - payment_card: 13 to 19 digits, either contiguous or in groups
//     separated by single spaces or single dashes (the same separator
//     throughout; every group of at least 3 digits, the first of at
//     least 4, as in "4111 1111 1111 1111" or "3782 822463 10005"), with a
//     known issuer prefix and one of its lengths (Visa 4: 13, 16, 19;
//     Mastercard 51-55 and 2221-2720: 16; Amex 34, 37: 15; Discover 6011,
//     65, 644-649: 16-19; JCB 3528-3589: 16-19; Diners 300-305, 36, 38:
//     14-19; UnionPay 62: 16-19), passing the Luhn check, not glued. Inside
//     a longer sequence of groups ("4111 1111 1111 1111 123", a card and a
//     CVV) the longest valid card is reported. Any Luhn-valid number with
//     such a prefix is reported, so about one random 16-digit number in
//     ten starting with 4 (an order number, say) is a false positive;
//     numbers with other separators ('.', '/', two spaces) are missed.
//   - us_ssn: AAA-GG-SSSS or AAA GG SSSS (one dash or one space, the same
//     twice), not glued, with area not 000, 666 or 900-999, group not 00,
//     serial not 0000, and not the numbers known from advertising
//     078-05-1120 and 219-09-9999. SSNs written without separators
//     (123456789) are not detected: nine digits are too often something
//     else. 123-45-6789 is a commonly used example, but is a valid-shaped
//     number and is reported.
//   - iban: two capitals naming a country of the IBAN registry (about 80,
//     including DE 22, GB 22, FR 27, ES 24, IT 27, NL 18, BE 16, CH 21,
//     AT 20, PL 28, SE 24, IE 22, PT 25, DK 18, NO 15, FI 18, LU 20), two
//     check digits, then capitals and digits up to exactly that country's
//     length, either compact or in groups of four separated by single
//     spaces ("GB82 WEST 1234 5698 7654 32"), not glued, and the mod-97
//     check equal to 1. Lower-case IBANs, other groupings and countries
//     missing from the table are not detected.
//   - email: local@domain.tld, conservative: a local part of 1-64 of
//     [A-Za-z0-9._%+-] not starting or ending with '.' and without "..";
//     a domain of at least two labels of [A-Za-z0-9-] (not starting or
//     ending with '-'), at most 253 bytes, ending in a TLD of 2-24 letters.
//     Not reported: addresses without a dot in the domain (user@localhost),
//     quoted or internationalised local parts, IP-literal domains, URL user
//     info ("https://user@host"), scp-like remotes ("git@github.com:o/r")
//     and image names ("icon@2x.png"). Package specifiers with a version
//     ("lodash@4.17.21") are not emails: the TLD is not letters.
//
// Custom detectors report findings as "custom:NAME"; their patterns must
// not be able to match an empty string.
//
// # Fingerprints
//
// Tokens picks the high-entropy substrings of a text (see its
// documentation for the exact rule: runs of [A-Za-z0-9+/_.-] of 20 to
// 4096 bytes, mixing classes, with 3.5+ bits per byte of entropy, not made
// of words). Fingerprints remembers them as HMAC-SHA256 hashes, truncated
// to 16 bytes, under a random per-instance key — never the values — each
// with an origin, and Match finds them again, byte for byte, in another
// text: a secret a labelled server returned, copied into an argument for
// another server. A fingerprinted token that comes back re-encoded,
// split, truncated or with its case changed is not found; nor is one
// shorter than 20 bytes.
package detect
