//! SQLite column types for the domain types (the `sqlite` feature): `Hash256` as a 32-byte
//! BLOB in hash order, `Header` as its 80 wire bytes, `Target` as 32 bytes big-endian (so
//! targets compare as BLOBs the way they compare as numbers). A BLOB of the wrong length, or a
//! zero target, is a conversion error naming what was found, never a panic.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::header::{Hash256, Header};
use crate::target::Target;

/// The column's bytes, exactly `N` of them.
fn blob<const N: usize>(value: ValueRef<'_>) -> FromSqlResult<[u8; N]> {
    let bytes = value.as_blob()?;
    bytes.try_into().map_err(|_| FromSqlError::InvalidBlobSize { expected_size: N, blob_size: bytes.len() })
}

impl ToSql for Hash256 {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(&self.0[..]))
    }
}

impl FromSql for Hash256 {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        blob(value).map(Hash256)
    }
}

impl ToSql for Header {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_bytes().to_vec()))
    }
}

impl FromSql for Header {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        blob(value).map(|bytes| Header::from_bytes(&bytes))
    }
}

impl ToSql for Target {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_be_bytes().to_vec()))
    }
}

impl FromSql for Target {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Target::from_be_bytes(blob(value)?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CompactTarget;
    use rusqlite::Connection;

    #[test]
    fn domain_types_round_trip_through_sqlite_and_bad_blobs_are_errors() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (hash BLOB, header BLOB, target BLOB)").unwrap();
        let header = Header {
            version: 0x2000_0000,
            prev_blockhash: Hash256([1; 32]),
            merkle_root: Hash256([2; 32]),
            time: 1_700_000_000,
            bits: CompactTarget(0x1d00ffff),
            nonce: 42,
        };
        let hash = header.block_hash();
        conn.execute("INSERT INTO t VALUES (?1, ?2, ?3)", (hash, header, Target::DIFFICULTY_1)).unwrap();
        let back: (Hash256, Header, Target) = conn
            .query_row("SELECT hash, header, target FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!(back, (hash, header, Target::DIFFICULTY_1));
        let hex: String = conn.query_row("SELECT hex(target) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(hex.to_lowercase(), Target::DIFFICULTY_1.to_hex(), "big-endian, as the hex shows it");

        conn.execute("UPDATE t SET hash = x'0102', target = zeroblob(32)", []).unwrap();
        let err = conn.query_row("SELECT hash FROM t", [], |r| r.get::<_, Hash256>(0)).unwrap_err();
        assert!(err.to_string().contains("32"), "{err}");
        let err = conn.query_row("SELECT target FROM t", [], |r| r.get::<_, Target>(0)).unwrap_err();
        assert!(err.to_string().contains("zero"), "{err}");
        let err = conn.query_row("SELECT 'text'", [], |r| r.get::<_, Header>(0)).unwrap_err();
        assert!(matches!(err, rusqlite::Error::InvalidColumnType(..)), "{err}");
    }
}
