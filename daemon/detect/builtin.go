package detect

import "strings"

// The built-in detectors are hand-written scanners, not regular
// expressions: each looks for a cheap anchor (a literal prefix found with
// strings.Index, an '@', a run of digits, two capitals before two digits)
// and checks only what follows it. Every scanner resumes after the text it
// examined, so each runs in time linear in the text.

var scanners = map[Detector]func(string, *collector){
	AWSAccessKey: scanAWS,
	PrivateKey:   scanPrivateKey,
	GitHubToken:  scanGitHub,
	SlackToken:   scanSlack,
	APIKey:       scanAPIKey,
	JWT:          scanJWT,
	Email:        scanEmail,
	// PaymentCard, USSSN and IBAN: scanNumbers.
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }
func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }
func isLower(b byte) bool { return 'a' <= b && b <= 'z' }
func isAlnum(b byte) bool { return isDigit(b) || isUpper(b) || isLower(b) }

// isB64URL: the base64url alphabet (tokens, JWT segments).
func isB64URL(b byte) bool { return isAlnum(b) || b == '-' || b == '_' }

// span returns the end of the run of bytes from i that satisfy ok.
func span(t string, i int, ok func(byte) bool) int {
	for i < len(t) && ok(t[i]) {
		i++
	}
	return i
}

// alnumBefore reports whether the byte before i is a letter or digit.
func alnumBefore(t string, i int) bool { return i > 0 && isAlnum(t[i-1]) }

// alnumAt reports whether the byte at i is a letter or digit.
func alnumAt(t string, i int) bool { return i < len(t) && isAlnum(t[i]) }

// forEach calls fn at each occurrence of lit in t; fn returns where to
// resume (at least p+1 is used). It stops when the collector is full.
func forEach(t, lit string, c *collector, fn func(p int) int) { forEachAt(t, lit, 0, c, fn) }

// forEachAt is forEach searching for lit[k:] (rarer bytes than lit's
// first ones make the search faster) and checking lit[:k] before it.
func forEachAt(t, lit string, k int, c *collector, fn func(p int) int) {
	anchor := lit[k:]
	for i := k; i < len(t) && !c.full(); {
		x := strings.Index(t[i:], anchor)
		if x < 0 {
			return
		}
		p := i + x - k
		if t[p:p+k] != lit[:k] {
			i = p + k + 1
			continue
		}
		i = max(fn(p), p+1) + k
	}
}

// scanAWS: AKIA or ASIA + 16 [A-Z0-9], not inside a longer alnum run.
func scanAWS(t string, c *collector) {
	forEach(t, "IA", c, func(p int) int {
		s := p - 2
		if s < 0 || (t[s:p] != "AK" && t[s:p] != "AS") || alnumBefore(t, s) {
			return p + 2
		}
		e := s + 20
		if e > len(t) || alnumAt(t, e) {
			return p + 2
		}
		for i := p + 2; i < e; i++ {
			if !isUpper(t[i]) && !isDigit(t[i]) {
				return i
			}
		}
		c.add(s, e)
		return e
	})
}

// maxPEM is how far after a private key header its END line is looked
// for, and how much base64 body is taken when there is none.
const maxPEM = 16 << 10

// pemLabel parses a PEM boundary label from i (after "-----BEGIN " or
// "-----END "): it returns the end of the closing "-----" and whether the
// label names a private key.
func pemLabel(t string, i int) (int, bool) {
	j := i
	for j < len(t) && j-i <= 64 && (isUpper(t[j]) || isDigit(t[j]) || t[j] == ' ') {
		j++
	}
	if !strings.HasPrefix(t[j:], "-----") {
		return i, false
	}
	l := t[i:j]
	return j + 5, strings.HasSuffix(l, "PRIVATE KEY") || strings.HasSuffix(l, "PRIVATE KEY BLOCK")
}

func isPEMBody(b byte) bool {
	return isAlnum(b) || b == '+' || b == '/' || b == '=' || b == '\n' || b == '\r' || b == ' ' || b == '\t' || b == '\\'
}

// scanPrivateKey: a "-----BEGIN <...>PRIVATE KEY[ BLOCK]-----" header,
// through its END line when one follows within maxPEM bytes, else through
// the base64 body that follows it.
func scanPrivateKey(t string, c *collector) {
	nextEnd := -2 // position of the next "-----END ", -1: none; -2: not looked for
	forEachAt(t, "-----BEGIN ", 5, c, func(p int) int {
		h, ok := pemLabel(t, p+len("-----BEGIN "))
		if !ok {
			return p + 1
		}
		if nextEnd != -1 && nextEnd < h {
			if k := strings.Index(t[h:], "-----END "); k >= 0 {
				nextEnd = h + k
			} else {
				nextEnd = -1
			}
		}
		if nextEnd >= 0 && nextEnd-h <= maxPEM {
			if e, ok := pemLabel(t, nextEnd+len("-----END ")); ok {
				c.add(p, e)
				return e
			}
		}
		e := span(t[:min(len(t), h+maxPEM)], h, isPEMBody)
		for e > h && (t[e-1] == '\n' || t[e-1] == '\r' || t[e-1] == ' ' || t[e-1] == '\t') {
			e--
		}
		c.add(p, e)
		return e
	})
}

// scanGitHub: ghp_/gho_/ghu_/ghs_/ghr_ + at least 36 (at most 255)
// letters and digits; github_pat_ + at least 22 (at most 255) of
// [A-Za-z0-9_].
func scanGitHub(t string, c *collector) {
	forEach(t, "gh", c, func(p int) int {
		if p+4 > len(t) || t[p+3] != '_' || !strings.ContainsRune("pousr", rune(t[p+2])) || alnumBefore(t, p) {
			return p + 2
		}
		e := span(t, p+4, isAlnum)
		if n := e - p - 4; n >= 36 && n <= 255 && (e == len(t) || t[e] != '_') {
			c.add(p, e)
		}
		return e
	})
	if c.full() {
		return
	}
	forEach(t, "github_pat_", c, func(p int) int {
		e := span(t, p+len("github_pat_"), func(b byte) bool { return isAlnum(b) || b == '_' })
		if n := e - p - len("github_pat_"); n >= 22 && n <= 255 && !alnumBefore(t, p) {
			c.add(p, e)
		}
		return e
	})
}

func isSlackBody(b byte) bool { return isAlnum(b) || b == '-' }

// scanSlack: xoxa-, xoxb-, xoxp-, xoxo-, xoxr-, xoxs- + 10 to 255 of
// [A-Za-z0-9-] holding a digit.
func scanSlack(t string, c *collector) {
	forEach(t, "xox", c, func(p int) int {
		if p+5 > len(t) || t[p+4] != '-' || !strings.ContainsRune("abpors", rune(t[p+3])) || alnumBefore(t, p) {
			return p + 3
		}
		e := span(t, p+5, isSlackBody)
		resume := e
		for e > p+5 && t[e-1] == '-' {
			e--
		}
		body := t[p+5 : e]
		if len(body) >= 10 && len(body) <= 255 && strings.ContainsAny(body, "0123456789") {
			c.add(p, e)
		}
		return resume
	})
}

// scanAPIKey: sk- + 20..255 of [A-Za-z0-9_-] with a letter and a digit
// (OpenAI sk-..., sk-proj-..., Anthropic sk-ant-...); Stripe sk_live_ and
// rk_live_ + 16..255 letters and digits; Google AIza + exactly 35 of
// [A-Za-z0-9_-].
func scanAPIKey(t string, c *collector) {
	forEachAt(t, "sk-", 1, c, func(p int) int {
		e := span(t, p+3, isB64URL)
		if p > 0 && isB64URL(t[p-1]) {
			return e
		}
		body := t[p+3 : e]
		if len(body) >= 20 && len(body) <= 255 && strings.ContainsAny(body, "0123456789") && hasLetter(body) {
			c.add(p, e)
		}
		return e
	})
	if c.full() {
		return
	}
	forEach(t, "k_live_", c, func(p int) int {
		if p == 0 || (t[p-1] != 's' && t[p-1] != 'r') {
			return p + 7
		}
		e := span(t, p+7, isAlnum)
		if n := e - p - 7; n >= 16 && n <= 255 && !alnumBefore(t, p-1) && (e == len(t) || t[e] != '_') {
			c.add(p-1, e)
		}
		return e
	})
	if c.full() {
		return
	}
	forEachAt(t, "AIza", 1, c, func(p int) int {
		e := span(t, p+4, isB64URL)
		if e-p == 39 && (p == 0 || !isB64URL(t[p-1])) {
			c.add(p, e)
		}
		return e
	})
}

func hasLetter(s string) bool {
	for i := 0; i < len(s); i++ {
		if isUpper(s[i]) || isLower(s[i]) {
			return true
		}
	}
	return false
}

// scanJWT: eyJ<b64url>.eyJ<b64url>.<b64url> with a header and a payload
// of at least 10 characters each (the signature may be empty: alg none).
func scanJWT(t string, c *collector) {
	forEachAt(t, "eyJ", 1, c, func(p int) int {
		e1 := span(t, p, isB64URL)
		if p > 0 && (isB64URL(t[p-1]) || t[p-1] == '.') {
			return e1
		}
		if e1-p < 10 || !strings.HasPrefix(t[e1:], ".eyJ") {
			return e1
		}
		e2 := span(t, e1+1, isB64URL)
		if e2-e1-1 < 10 || e2 >= len(t) || t[e2] != '.' {
			return e2
		}
		e3 := span(t, e2+1, isB64URL)
		if e3+1 < len(t) && t[e3] == '.' && isB64URL(t[e3+1]) {
			return span(t, e3+1, isB64URL) // more segments: not a JWS compact token
		}
		c.add(p, e3)
		return e3
	})
}

// scanNumbers runs the detectors anchored on a run of digits (cards,
// SSNs, IBANs: their check digits) in one pass over t; a nil collector is
// a detector that is off. Each detector resumes after the text it
// examined.
func scanNumbers(t string, card, ssn, iban *collector) {
	on := func(c *collector) bool { return c != nil && !c.full() }
	cardNext, ssnNext, ibanNext := 0, 0, 0
	for i := 0; i < len(t); {
		if !isDigit(t[i]) {
			i++
			continue
		}
		if !on(card) && !on(ssn) && !on(iban) {
			return
		}
		p := i
		i = span(t, i, isDigit)
		if on(iban) && p-2 >= ibanNext && isUpper(t[p-1]) && isUpper(t[p-2]) {
			if e := ibanAt(t, p-2); e > 0 {
				iban.add(p-2, e)
				ibanNext = e
			}
		}
		if on(ssn) && p >= ssnNext {
			ssnNext = ssnAt(t, p, ssn)
		}
		if on(card) && p >= cardNext {
			cardNext = cardsAt(t, p, card)
		}
	}
}

// numberGlued reports whether the separator at i (a byte just outside a
// candidate) continues a number: it is one of ".,-/:" (or, when space is
// the candidate's own separator, a space) with a digit on its far side
// j.
func numberGlued(t string, i, j int, sep byte) bool {
	if i < 0 || i >= len(t) || j < 0 || j >= len(t) || !isDigit(t[j]) {
		return false
	}
	b := t[i]
	return b == '.' || b == ',' || b == '-' || b == '/' || b == ':' || (b == ' ' && sep == ' ')
}

// SSNs: AAA-GG-SSSS or AAA GG SSSS (one separator, the same twice),
// not glued to letters, digits or another number; area not 000, 666 or
// 900-999, group not 00, serial not 0000; 078-05-1120 and 219-09-9999
// (published in advertising) are not SSNs. 123-45-6789 is reported.
//
// ssnAt looks at the run of digits at p and returns where to resume.
func ssnAt(t string, p int, c *collector) int {
	if p+11 > len(t) || !isDigit(t[p+1]) || !isDigit(t[p+2]) {
		return p
	}
	sep := t[p+3]
	if (sep != '-' && sep != ' ') || t[p+6] != sep {
		return p
	}
	for _, i := range []int{4, 5, 7, 8, 9, 10} {
		if !isDigit(t[p+i]) {
			return p
		}
	}
	e := p + 11
	if (p > 0 && (isAlnum(t[p-1]) || t[p-1] == '_')) || (e < len(t) && (isAlnum(t[e]) || t[e] == '_')) {
		return p
	}
	if numberGlued(t, p-1, p-2, sep) || numberGlued(t, e, e+1, sep) {
		return p
	}
	area, group, serial := t[p:p+3], t[p+4:p+6], t[p+7:p+11]
	if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
		return e
	}
	if n := area + group + serial; n == "078051120" || n == "219099999" {
		return e
	}
	c.add(p, e)
	return e
}

// Cards: sequences of digit groups, each separated by one ' ' or '-'
// (the same throughout). A candidate is a single group of 13-19 digits,
// or consecutive groups of at least 3 digits each (the first at least 4)
// totalling 13-19 digits; it must have a known issuer prefix and length
// and pass the Luhn check. Of candidates starting at the same group the
// longest wins.
//
// cardsAt looks at the run of digits at p and returns where to resume.
func cardsAt(t string, p int, c *collector) int {
	if e := span(t, p, isDigit); (p > 0 && (isAlnum(t[p-1]) || t[p-1] == '_')) ||
		(e-p < 13 && !(e+1 < len(t) && (t[e] == ' ' || t[e] == '-') && isDigit(t[e+1]))) {
		return e // glued, or too short and alone
	}
	var buf [32][2]int
	groups := buf[:0]
	// Collect the sequence of groups.
	var sep byte
	i := p
	for {
		e := span(t, i, isDigit)
		groups = append(groups, [2]int{i, e})
		if e+1 < len(t) && isDigit(t[e+1]) && (t[e] == ' ' || t[e] == '-') && (sep == 0 || t[e] == sep) && len(groups) < 32 {
			sep = t[e]
			i = e + 1
			continue
		}
		break
	}
	end := groups[len(groups)-1][1]
	// A sequence glued to letters at its end: its last group is not
	// a card's.
	last := len(groups)
	if end < len(t) && (isAlnum(t[end]) || t[end] == '_') {
		last--
	}
	first := 0
	if numberGlued(t, p-1, p-2, 0) {
		first = 1 // the first group continues a number (1.5, 12/34)
	}
	if numberGlued(t, end, end+1, 0) && last == len(groups) {
		last-- // the last group continues into a number
	}
	for a := first; a < last; {
		best := -1
		n := 0
		for b := a; b < last; b++ {
			g := groups[b][1] - groups[b][0]
			n += g
			if n > 19 {
				break
			}
			if b > a || n < 13 {
				// Multi-group candidates: groups of 3+ digits, the
				// first of 4+.
				if g < 3 || (b == a && g < 4) {
					break
				}
			}
			if n >= 13 && cardValid(t, groups[a:b+1], n) {
				best = b
			}
		}
		if best < 0 {
			a++
			continue
		}
		if !c.add(groups[a][0], groups[best][1]) {
			break
		}
		a = best + 1
	}
	return end
}

// cardValid checks the digits of groups (n of them): issuer prefix and
// length, and Luhn.
func cardValid(t string, groups [][2]int, n int) bool {
	var d [19]byte
	k := 0
	for _, g := range groups {
		for i := g[0]; i < g[1]; i++ {
			d[k] = t[i] - '0'
			k++
		}
	}
	if !issuer(d[:n]) {
		return false
	}
	sum := 0
	for i := 0; i < n; i++ {
		v := int(d[n-1-i])
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

// issuer reports whether d (digits 0-9) starts with a known issuer
// identification number and has a length that issuer uses.
func issuer(d []byte) bool {
	n := len(d)
	p := func(k int) int { // the first k digits as a number
		v := 0
		for i := 0; i < k; i++ {
			v = v*10 + int(d[i])
		}
		return v
	}
	p2, p3, p4 := p(2), p(3), p(4)
	switch {
	case d[0] == 4: // Visa
		return n == 13 || n == 16 || n == 19
	case (p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720): // Mastercard
		return n == 16
	case p2 == 34 || p2 == 37: // American Express
		return n == 15
	case p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649): // Discover
		return n >= 16
	case p4 >= 3528 && p4 <= 3589: // JCB
		return n >= 16
	case (p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38: // Diners Club
		return n >= 14
	case p2 == 62: // UnionPay
		return n >= 16
	}
	return false
}

// ibanLength is the length of an IBAN by country (SWIFT IBAN registry).
var ibanLength = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
	"BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
	"EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
	"GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
	"JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
	"MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
	"NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
	"SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
	"TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

// ibanLen is ibanLength indexed by the two letters.
var ibanLen = func() (a [26 * 26]uint8) {
	for cc, n := range ibanLength {
		a[int(cc[0]-'A')*26+int(cc[1]-'A')] = uint8(n)
	}
	return a
}()

func isIBANChar(b byte) bool { return isUpper(b) || isDigit(b) }

// IBANs: two capitals (a country of the table) and two check digits,
// then the rest of the country's length in capitals and digits, either
// compact or in groups of four separated by single spaces; not glued to
// letters or digits; mod-97 of the rearranged number is 1.
//
// ibanAt checks for an IBAN at i (two capitals, then digits) and returns
// its end, or -1.
func ibanAt(t string, i int) int {
	if i+4 > len(t) || !isUpper(t[i]) || !isUpper(t[i+1]) || !isDigit(t[i+2]) || !isDigit(t[i+3]) || alnumBefore(t, i) {
		return -1
	}
	n := int(ibanLen[int(t[i]-'A')*26+int(t[i+1]-'A')])
	if n == 0 {
		return -1
	}
	var buf [34]byte
	copy(buf[:], t[i:i+4])
	k, j := 4, i+4
	grouped := j < len(t) && t[j] == ' '
	for k < n {
		if grouped {
			if j >= len(t) || t[j] != ' ' {
				break
			}
			j++
			g := min(4, n-k)
			if j+g > len(t) {
				break
			}
			ok := true
			for x := 0; x < g; x++ {
				if !isIBANChar(t[j+x]) {
					ok = false
					break
				}
				buf[k] = t[j+x]
				k++
			}
			if !ok {
				break
			}
			j += g
		} else {
			if j >= len(t) || !isIBANChar(t[j]) {
				break
			}
			buf[k] = t[j]
			k++
			j++
		}
	}
	if k < n || alnumAt(t, j) || !mod97(buf[:n]) {
		return -1
	}
	return j
}

// mod97 reports whether the IBAN s (capitals and digits) has valid check
// digits: its first four characters moved to the end, letters as 10-35,
// the number mod 97 is 1.
func mod97(s []byte) bool {
	r := 0
	for i := range s {
		ch := s[(i+4)%len(s)]
		if isDigit(ch) {
			r = (r*10 + int(ch-'0')) % 97
		} else {
			r = (r*100 + int(ch-'A') + 10) % 97
		}
	}
	return r == 1
}

func isLocal(b byte) bool {
	return isAlnum(b) || b == '.' || b == '_' || b == '%' || b == '+' || b == '-'
}

func isDomain(b byte) bool { return isAlnum(b) || b == '.' || b == '-' }

// scanEmail: local@domain.tld. The local part is 1-64 of
// [A-Za-z0-9._%+-], not starting or ending with '.' and without "..";
// the domain is at most 253 bytes of labels of 1-63 [A-Za-z0-9-] not
// starting or ending with '-', at least two, the last (the TLD) 2-24
// letters. Not reported: URL user info ("//user@host"), scp-like
// remotes ("git@host:path") and image names ("icon@2x.png").
func scanEmail(t string, c *collector) {
	forEach(t, "@", c, func(p int) int {
		s := p
		for s > 0 && p-s <= 64 && isLocal(t[s-1]) {
			s--
		}
		if s > 0 && isLocal(t[s-1]) {
			return span(t, p+1, isDomain) // a local part longer than 64
		}
		for s < p && t[s] == '.' {
			s++ // "...name@": leading dots are punctuation
		}
		e := span(t, p+1, isDomain)
		resume := e
		for e > p+1 && (t[e-1] == '.' || t[e-1] == '-') {
			e--
		}
		local, domain := t[s:p], t[p+1:e]
		if len(local) == 0 || len(local) > 64 || t[p-1] == '.' || strings.Contains(local, "..") {
			return resume
		}
		if s >= 2 && t[s-2:s] == "//" {
			return resume
		}
		if e+1 < len(t) && t[e] == ':' && (isAlnum(t[e+1]) || t[e+1] == '/' || t[e+1] == '~' || t[e+1] == '_') {
			return resume
		}
		if e < len(t) && t[e] == '@' {
			return resume
		}
		if !validDomain(domain) {
			return resume
		}
		c.add(s, e)
		return resume
	})
}

func validDomain(d string) bool {
	if len(d) < 4 || len(d) > 253 {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
	}
	tld := labels[len(labels)-1]
	if len(tld) < 2 || len(tld) > 24 {
		return false
	}
	for i := 0; i < len(tld); i++ {
		if isDigit(tld[i]) || tld[i] == '-' {
			return false
		}
	}
	// icon@2x.png, logo@1.5x.svg: image densities, not domains.
	if rest := strings.TrimLeft(d, "0123456789."); rest != d && strings.HasPrefix(rest, "x.") {
		return false
	}
	return true
}
