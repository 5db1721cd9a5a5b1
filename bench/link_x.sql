-- Case X of the benchmark: mailsync linking the anchor tables with the
-- mapping the hand-written baselines implement.
SELECT mailsync.link('creds', 'v1.credentials', 'v2.credentials', $${
	"id": "id", "server_id": "server_id", "key": "key", "name": "name",
	"kind": "type",
	"status": {"up": "CASE WHEN legacy.hold THEN 'hold' ELSE 'active' END",
			   "down": "current.status = 'hold'", "to": "hold"},
	"uuid": {"up": "gen_random_uuid()"},
	"created_at": "created_at", "updated_at": "updated_at"}$$);
