// Command conformance answers requests about signed notes and RFC 6962 /
// tlog Merkle trees using Go's golang.org/x/mod/sumdb/note and
// golang.org/x/mod/sumdb/tlog, so that tests/test_conformance_go.py can
// cross-check the Python implementation in federation/ against code we did
// not write.
//
// Protocol: a JSON array of requests on stdin, a JSON array of responses (one
// per request, same order) on stdout. []byte fields are standard base64, as
// are tlog.Hash values (tlog.Hash implements JSON as a base64 string).
//
// Build (GOPATH mode, Debian's golang-golang-x-mod-dev):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o conformance conformance.go
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is the tlog-tiles tile height: 2**8 = 256 hashes per tile.
const tileHeight = 8

type recordReq struct {
	Size  int64       `json:"size"`
	Index int64       `json:"index"`
	Leaf  tlog.Hash   `json:"leaf"`
	Proof []tlog.Hash `json:"proof"`
}

type treeReq struct {
	Size    int64       `json:"size"`
	Old     int64       `json:"old"`
	Root    tlog.Hash   `json:"root"`
	OldRoot tlog.Hash   `json:"old_root"`
	Proof   []tlog.Hash `json:"proof"`
}

type request struct {
	Op string `json:"op"`

	// notes
	Vkey  string   `json:"vkey"`
	Vkeys []string `json:"vkeys"`
	Skey  string   `json:"skey"`
	Skeys []string `json:"skeys"`
	Name  string   `json:"name"`
	Msg   []byte   `json:"msg"`
	Text  []byte   `json:"text"`

	// trees
	Leaves  [][]byte    `json:"leaves"`
	Gen     int64       `json:"gen"` // leaves "leaf 0", "leaf 1", ... as in tlog_test.go
	Size    int64       `json:"size"`
	Sizes   []int64     `json:"sizes"`
	Tiles   [][3]int64  `json:"tiles"` // (level, index, width)
	Records []recordReq `json:"records"`
	Trees   []treeReq   `json:"trees"`
	Root    tlog.Hash   `json:"root"`
	Dir     string      `json:"dir"`
	Indexes []int64     `json:"indexes"`
	Olds    []int64     `json:"olds"`

	// cosignatures (c2sp.org/tlog-cosignature, type 0x04) and tile paths
	Cosigners []string `json:"cosigners"`
	Paths     []string `json:"paths"`
}

type response map[string]interface{}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errKind classifies note.Open errors the way federation.errors does.
func errKind(err error) string {
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &unverified):
		return "unverified"
	case errors.As(err, &invalid):
		return "invalid_signature"
	case err.Error() == "malformed note":
		return "malformed"
	}
	return "other"
}

func sigList(sigs []note.Signature) []response {
	out := []response{}
	for _, s := range sigs {
		out = append(out, response{"name": s.Name, "hash": s.Hash, "base64": s.Base64})
	}
	return out
}

// ---- signed notes ---------------------------------------------------------

func doVerifier(r request) response {
	v, err := note.NewVerifier(r.Vkey)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	return response{"ok": true, "name": v.Name(), "hash": v.KeyHash()}
}

func doSigner(r request) response {
	s, err := note.NewSigner(r.Skey)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	return response{"ok": true, "name": s.Name(), "hash": s.KeyHash()}
}

func doGenerate(r request) response {
	skey, vkey, err := note.GenerateKey(rand.Reader, r.Name)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	return response{"ok": true, "skey": skey, "vkey": vkey}
}

func doSign(r request) response {
	var signers []note.Signer
	for _, k := range r.Skeys {
		s, err := note.NewSigner(k)
		if err != nil {
			return response{"ok": false, "err": "signer: " + err.Error()}
		}
		signers = append(signers, s)
	}
	msg, err := note.Sign(&note.Note{Text: string(r.Text)}, signers...)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	return response{"ok": true, "msg": msg}
}

func verifiers(vkeys []string) (note.Verifiers, error) {
	var list []note.Verifier
	for _, k := range vkeys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("verifier %q: %v", k, err)
		}
		list = append(list, v)
	}
	return note.VerifierList(list...), nil
}

func doOpen(r request) response {
	known, err := verifiers(r.Vkeys)
	if err != nil {
		return response{"ok": false, "err": err.Error(), "kind": "bad_vkey"}
	}
	n, err := note.Open(r.Msg, known)
	if err != nil {
		return response{"ok": false, "err": err.Error(), "kind": errKind(err)}
	}
	return response{"ok": true, "text": []byte(n.Text), "sigs": sigList(n.Sigs), "unverified": sigList(n.UnverifiedSigs)}
}

// ---- Merkle trees -----------------------------------------------------------

type hashStorage []tlog.Hash

func (s hashStorage) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(s)) {
			return nil, fmt.Errorf("hash index %d not stored (have %d)", x, len(s))
		}
		out[i] = s[x]
	}
	return out, nil
}

func leavesOf(r request) [][]byte {
	if r.Gen > 0 {
		out := make([][]byte, r.Gen)
		for i := range out {
			out[i] = []byte(fmt.Sprintf("leaf %d", i))
		}
		return out
	}
	return r.Leaves
}

func buildStorage(leaves [][]byte) (hashStorage, error) {
	var storage hashStorage
	for i, data := range leaves {
		hashes, err := tlog.StoredHashes(int64(i), data, storage)
		if err != nil {
			return nil, err
		}
		storage = append(storage, hashes...)
	}
	return storage, nil
}

func tilePath(t tlog.Tile) string {
	// Go writes tile/H/L/N[.p/W] (sumdb); tlog-tiles drops the height
	// element because it is always 8, and calls level -1 "entries".
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", t.H)
	if !strings.HasPrefix(p, prefix) {
		panic("unexpected tile path " + p)
	}
	p = "tile/" + p[len(prefix):]
	if strings.HasPrefix(p, "tile/data/") {
		p = "tile/entries/" + p[len("tile/data/"):]
	}
	return p
}

func doTree(r request) response {
	leaves := leavesOf(r)
	storage, err := buildStorage(leaves)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	n := int64(len(leaves))
	out := response{"ok": true, "size": n}

	roots := []tlog.Hash{}
	for _, size := range r.Sizes {
		h, err := tlog.TreeHash(size, storage)
		if err != nil {
			return response{"ok": false, "err": err.Error()}
		}
		roots = append(roots, h)
	}
	out["roots"] = roots

	recordHashes := []tlog.Hash{}
	if len(leaves) <= 4096 {
		for _, data := range leaves {
			recordHashes = append(recordHashes, tlog.RecordHash(data))
		}
	}
	out["record_hashes"] = recordHashes

	var records []response
	for _, rq := range r.Records {
		p, err := tlog.ProveRecord(rq.Size, rq.Index, storage)
		records = append(records, response{"size": rq.Size, "index": rq.Index, "proof": p, "err": errString(err)})
	}
	out["records"] = records

	var trees []response
	for _, tq := range r.Trees {
		p, err := tlog.ProveTree(tq.Size, tq.Old, storage)
		trees = append(trees, response{"size": tq.Size, "old": tq.Old, "proof": p, "err": errString(err)})
	}
	out["trees"] = trees

	// Tile contents (as sha256 of the tile bytes, to keep the output small).
	var tiles []response
	for _, t := range r.Tiles {
		tile := tlog.Tile{H: tileHeight, L: int(t[0]), N: t[1], W: int(t[2])}
		data, err := tlog.ReadTileData(tile, storage)
		sum := sha256.Sum256(data)
		tiles = append(tiles, response{"level": t[0], "index": t[1], "width": t[2], "path": tilePath(tile),
			"sha256": hex.EncodeToString(sum[:]), "len": len(data), "err": errString(err)})
	}
	out["tiles"] = tiles

	// The tiles a tree of size r.Size exposes: NewTiles(8, 0, size) lists
	// every width of the rightmost tiles; keep the widest of each.
	if r.Size > 0 {
		widest := map[[2]int64]tlog.Tile{}
		var order [][2]int64
		for _, t := range tlog.NewTiles(tileHeight, 0, r.Size) {
			k := [2]int64{int64(t.L), t.N}
			old, seen := widest[k]
			if !seen {
				order = append(order, k)
			}
			if !seen || t.W > old.W {
				widest[k] = t
			}
		}
		var exposed []response
		for _, k := range order {
			t := widest[k]
			exposed = append(exposed, response{"level": t.L, "index": t.N, "width": t.W, "path": tilePath(t)})
		}
		out["exposed"] = exposed
	}
	return out
}

func doCheck(r request) response {
	var records []string
	for _, rq := range r.Records {
		records = append(records, errString(tlog.CheckRecord(rq.Proof, r.Size, r.Root, rq.Index, rq.Leaf)))
	}
	var trees []string
	for _, tq := range r.Trees {
		trees = append(trees, errString(tlog.CheckTree(tq.Proof, r.Size, r.Root, tq.Old, tq.OldRoot)))
	}
	return response{"ok": true, "records": records, "trees": trees}
}

// dirTiles reads tlog-tiles hash tiles from a directory laid out as the
// tlog-tiles HTTP API (dir/tile/L/N[.p/W]).
type dirTiles struct {
	dir  string
	read []string
}

func (d *dirTiles) Height() int { return tileHeight }

func (d *dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := tilePath(t)
		data, err := ioutil.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
		if err != nil {
			return nil, fmt.Errorf("tile %s: %v", p, err)
		}
		d.read = append(d.read, p)
		out[i] = data
	}
	return out, nil
}

func (d *dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// parseCheckpoint parses a c2sp.org/tlog-checkpoint body: origin, size, root.
func parseCheckpoint(text string) (string, tlog.Tree, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint: want 3 newline-terminated lines, have %q", text)
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	sizeText := strings.TrimSuffix(lines[1], "\n")
	n, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != sizeText {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint: bad size %q", sizeText)
	}
	h, err := tlog.ParseHash(strings.TrimSuffix(lines[2], "\n"))
	if err != nil {
		return "", tlog.Tree{}, fmt.Errorf("checkpoint: bad root: %v", err)
	}
	return origin, tlog.Tree{N: n, Hash: h}, nil
}

// doAudit opens a checkpoint note, then reads the tree from a tile directory
// through tlog.TileHashReader, which authenticates every tile it reads
// against the checkpoint's root hash.
func doAudit(r request) response {
	known, err := verifiers([]string{r.Vkey})
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	n, err := note.Open(r.Msg, known)
	if err != nil {
		return response{"ok": false, "err": "open: " + err.Error()}
	}
	origin, tree, err := parseCheckpoint(n.Text)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	out := response{"ok": true, "origin": origin, "size": tree.N, "root": tree.Hash}
	if tree.N == 0 {
		return out
	}
	tr := &dirTiles{dir: r.Dir}
	thr := tlog.TileHashReader(tree, tr)

	th, err := tlog.TreeHash(tree.N, thr)
	if err != nil {
		return response{"ok": false, "err": "tree hash: " + err.Error()}
	}
	out["tree_hash"] = th

	var indexes []int64
	for _, i := range r.Indexes {
		indexes = append(indexes, tlog.StoredHashIndex(0, i))
	}
	leafHashes := []tlog.Hash{}
	if len(indexes) > 0 {
		leafHashes, err = thr.ReadHashes(indexes)
		if err != nil {
			return response{"ok": false, "err": "leaf hashes: " + err.Error()}
		}
	}
	out["leaf_hashes"] = leafHashes

	var recordProofs []response
	for _, i := range r.Indexes {
		p, err := tlog.ProveRecord(tree.N, i, thr)
		recordProofs = append(recordProofs, response{"index": i, "proof": p, "err": errString(err)})
	}
	out["record_proofs"] = recordProofs

	var oldRoots []response
	for _, old := range r.Olds {
		h, err := tlog.TreeHash(old, thr)
		var p tlog.TreeProof
		var perr error
		if old > 0 {
			p, perr = tlog.ProveTree(tree.N, old, thr)
		}
		oldRoots = append(oldRoots, response{"old": old, "root": h, "err": errString(err), "proof": p, "proof_err": errString(perr)})
	}
	out["olds"] = oldRoots

	// Check the Python side's proofs against the tree Go just authenticated.
	var records []string
	for _, rq := range r.Records {
		records = append(records, errString(tlog.CheckRecord(rq.Proof, tree.N, tree.Hash, rq.Index, rq.Leaf)))
	}
	out["checked_records"] = records
	var trees []string
	for _, tq := range r.Trees {
		trees = append(trees, errString(tlog.CheckTree(tq.Proof, tree.N, tree.Hash, tq.Old, tq.OldRoot)))
	}
	out["checked_trees"] = trees
	out["tiles_read"] = tr.read
	return out
}

// ---- tlog-cosignature (type 0x04) ------------------------------------------

// cosignerKey parses a "name+hex8+base64(0x04 || key)" verifier key by hand:
// sumdb/note knows only type 0x01. It splits at the first two '+' (the base64
// may hold more) and recomputes the key hash, as note.NewVerifier does for 0x01.
func cosignerKey(vkey string) (name string, hash uint32, pub ed25519.PublicKey, err error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return "", 0, nil, errors.New("want name+hash+key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return "", 0, nil, errors.New("want base64 of 0x04 and a 32-byte key")
	}
	h := sha256.New()
	h.Write([]byte(parts[0] + "\n"))
	h.Write(raw)
	sum := h.Sum(nil)
	hash = binary.BigEndian.Uint32(sum[:4])
	if fmt.Sprintf("%08x", hash) != parts[1] {
		return "", 0, nil, errors.New("key hash does not match the key")
	}
	return parts[0], hash, ed25519.PublicKey(raw[1:]), nil
}

// doCosig opens a note with the log keys (sumdb/note), then checks each
// unverified signature line made by one of the cosigner keys as a
// tlog-cosignature: u64 timestamp || Ed25519 over
// "cosignature/v1\ntime <T>\n" || note text.
func doCosig(r request) response {
	known, err := verifiers(r.Vkeys)
	if err != nil {
		return response{"ok": false, "err": err.Error()}
	}
	n, err := note.Open(r.Msg, known)
	if err != nil {
		return response{"ok": false, "err": "open: " + err.Error()}
	}
	var lines []response
	for _, vk := range r.Cosigners {
		name, hash, pub, err := cosignerKey(vk)
		if err != nil {
			lines = append(lines, response{"vkey": vk, "err": err.Error()})
			continue
		}
		for _, s := range n.UnverifiedSigs {
			if s.Name != name || s.Hash != hash {
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(s.Base64)
			if err != nil || len(sig) != 4+8+ed25519.SignatureSize {
				lines = append(lines, response{"vkey": vk, "err": "bad cosignature length"})
				continue
			}
			t := binary.BigEndian.Uint64(sig[4:12])
			msg := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t) + n.Text)
			lines = append(lines, response{"vkey": vk, "name": name, "hash": hash, "time": t,
				"ok": ed25519.Verify(pub, msg, sig[12:])})
		}
	}
	return response{"ok": true, "text": []byte(n.Text), "lines": lines}
}

// ---- tile paths -------------------------------------------------------------

// doTilePaths parses tlog-tiles paths (tile/L/N[.p/W], tile/entries/...) with
// tlog.ParseTilePath, after putting back the height element sumdb writes
// (tile/8/...) and its name for entry bundles ("data").
func doTilePaths(r request) response {
	var out []response
	for _, p := range r.Paths {
		if !strings.HasPrefix(p, "tile/") {
			out = append(out, response{"path": p, "err": "not under tile/"})
			continue
		}
		rest := p[len("tile/"):]
		if strings.HasPrefix(rest, "data/") {
			out = append(out, response{"path": p, "err": "sumdb's name for entry bundles, not tlog-tiles'"})
			continue
		}
		if strings.HasPrefix(rest, "entries/") {
			rest = "data/" + rest[len("entries/"):]
		}
		t, err := tlog.ParseTilePath("tile/8/" + rest)
		if err != nil {
			out = append(out, response{"path": p, "err": err.Error()})
			continue
		}
		out = append(out, response{"path": p, "level": t.L, "index": t.N, "width": t.W, "err": ""})
	}
	return response{"ok": true, "paths": out}
}

func handle(r request) (resp response) {
	defer func() {
		if e := recover(); e != nil {
			resp = response{"ok": false, "err": fmt.Sprintf("panic: %v", e), "kind": "panic"}
		}
	}()
	switch r.Op {
	case "verifier":
		return doVerifier(r)
	case "signer":
		return doSigner(r)
	case "generate":
		return doGenerate(r)
	case "sign":
		return doSign(r)
	case "open":
		return doOpen(r)
	case "tree":
		return doTree(r)
	case "check":
		return doCheck(r)
	case "audit":
		return doAudit(r)
	case "cosig":
		return doCosig(r)
	case "tilepaths":
		return doTilePaths(r)
	}
	return response{"ok": false, "err": "unknown op " + strconv.Quote(r.Op)}
}

func main() {
	in, err := ioutil.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var reqs []request
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reqs); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	out := make([]response, len(reqs))
	for i, r := range reqs {
		out[i] = handle(r)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
