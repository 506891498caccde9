//! The NBD protocol's numbers and messages (fixed newstyle handshake,
//! simple replies), as pure functions over bytes: what the server sends
//! is built here and what a client sends is checked here, so the parsing
//! can be tested and fuzzed without a socket.
//!
//! All integers are big endian (network order), as the protocol says.

/// `NBDMAGIC`: the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the server's second magic, and the start of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Starts every reply to an option.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Starts every request in the transmission phase.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Starts every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Starts every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// Information types of `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Flags this server accepts on a command (others are refused `EINVAL`).
pub const CMD_FLAGS_KNOWN: u16 = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_REQ_ONE;

/// Structured reply chunks: the flag of the last one, and their types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// The one metadata context served: which ranges are allocated.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Its id in `NBD_REP_META_CONTEXT` and block status replies.
pub const BASE_ALLOCATION_ID: u32 = 1;
/// `base:allocation` flags of an extent.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// Errors of a reply (Linux errno values, as the protocol defines them).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Bytes of an option header after `IHAVEOPT`: option and data length.
pub const OPTION_HEADER: usize = 16;
/// Bytes of a request header.
pub const REQUEST_HEADER: usize = 28;

/// What the server sends first: the magics and its handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// Checks the client's flags: unknown ones end the session (the
/// protocol's rule). Returns whether the client asked for no zeroes.
pub fn client_flags(flags: u32) -> Result<bool, String> {
    let known = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    if flags & !known != 0 {
        return Err(format!("unknown client flags {flags:#x}"));
    }
    Ok(flags & FLAG_C_NO_ZEROES != 0)
}

/// An option header: the option and the length of its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

/// Parses the 16 bytes of an option header (magic, option, length).
pub fn option_header(b: &[u8; OPTION_HEADER]) -> Result<OptionHeader, String> {
    let magic = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
    if magic != IHAVEOPT {
        return Err(format!("option without the IHAVEOPT magic ({magic:#x})"));
    }
    Ok(OptionHeader {
        option: u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
        len: u32::from_be_bytes(b[12..16].try_into().unwrap_or_default()),
    })
}

/// One reply to an option.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// An error reply to an option, with a message for the user.
pub fn option_error(option: u32, reply: u32, message: &str) -> Vec<u8> {
    option_reply(option, reply, message.as_bytes())
}

/// The `NBD_REP_SERVER` reply naming one export (for `NBD_OPT_LIST`).
pub fn server_reply(name: &str, description: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + name.len() + description.len());
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(description.as_bytes());
    option_reply(OPT_LIST, REP_SERVER, &d)
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn info_export(option: u32, size: u64, flags: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&flags.to_be_bytes());
    option_reply(option, REP_INFO, &d)
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`: a string.
pub fn info_string(option: u32, kind: u16, s: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(2 + s.len());
    d.extend_from_slice(&kind.to_be_bytes());
    d.extend_from_slice(s.as_bytes());
    option_reply(option, REP_INFO, &d)
}

/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub fn info_block_size(option: u32, min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&min.to_be_bytes());
    d.extend_from_slice(&preferred.to_be_bytes());
    d.extend_from_slice(&max.to_be_bytes());
    option_reply(option, REP_INFO, &d)
}

/// What the reply to `NBD_OPT_EXPORT_NAME` carries: size, flags, and the
/// 124 zero bytes unless the client asked for none.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
    }
    b
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export name and the
/// information types the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO` / `NBD_OPT_GO`. Lengths that do not
/// add up to the data's length, or a name that is not UTF-8, are invalid.
pub fn go_request(d: &[u8]) -> Result<GoRequest, String> {
    let name_len = d
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("shorter than its name length")?;
    let name = d
        .get(4..4usize.saturating_add(name_len))
        .ok_or("the name runs past the option's data")?;
    let name = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8")?;
    let rest = &d[4 + name_len..];
    let count = rest
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or("no count of information requests")?;
    let list = &rest[2..];
    if list.len() != count * 2 {
        return Err(format!(
            "{count} information requests announced, {} bytes of them sent",
            list.len()
        ));
    }
    Ok(GoRequest {
        name: name.to_string(),
        infos: list
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    })
}

/// A request of the transmission phase (its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub offset: u64,
    pub len: u32,
}

/// Parses a request header; a wrong magic means the stream is out of
/// step and the connection must end.
pub fn request(b: &[u8; REQUEST_HEADER]) -> Result<Request, String> {
    let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
    let magic = be32(0);
    if magic != REQUEST_MAGIC {
        return Err(format!("request without the request magic ({magic:#x})"));
    }
    Ok(Request {
        flags: be16(4),
        kind: be16(6),
        handle: be64(8),
        offset: be64(16),
        len: be32(24),
    })
}

/// A simple reply's header (the data of a successful read follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk's header (its payload of `len` bytes follows).
pub fn chunk_header(flags: u16, kind: u16, handle: u64, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

/// A whole structured chunk whose payload is `payload`.
pub fn chunk(flags: u16, kind: u16, handle: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + payload.len());
    b.extend_from_slice(&chunk_header(flags, kind, handle, payload.len() as u32));
    b.extend_from_slice(payload);
    b
}

/// The final `NBD_REPLY_TYPE_ERROR` chunk of a failed request.
pub fn error_chunk(handle: u64, error: u32, message: &str) -> Vec<u8> {
    let m = &message.as_bytes()[..message.len().min(4096)];
    let mut p = Vec::with_capacity(6 + m.len());
    p.extend_from_slice(&error.to_be_bytes());
    p.extend_from_slice(&(m.len() as u16).to_be_bytes());
    p.extend_from_slice(m);
    chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, handle, &p)
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`:
/// an export name and the queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: String,
    pub queries: Vec<String>,
}

/// Parses a meta context option's data; lengths that do not add up, or
/// strings that are not UTF-8, are invalid.
pub fn meta_request(d: &[u8]) -> Result<MetaRequest, String> {
    let mut at = 0usize;
    let u32_at = |d: &[u8], at: &mut usize| -> Result<usize, String> {
        let b = d.get(*at..*at + 4).ok_or("the data ends inside a length")?;
        *at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let string = |d: &[u8], at: &mut usize, n: usize| -> Result<String, String> {
        let b = d
            .get(*at..at.saturating_add(n))
            .ok_or("a string runs past the option's data")?;
        *at += n;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    };
    let n = u32_at(d, &mut at)?;
    let name = string(d, &mut at, n)?;
    let count = u32_at(d, &mut at)?;
    let mut queries = Vec::new();
    for _ in 0..count {
        let n = u32_at(d, &mut at)?;
        queries.push(string(d, &mut at, n)?);
    }
    if at != d.len() {
        return Err(format!("{} bytes after the last query", d.len() - at));
    }
    Ok(MetaRequest { name, queries })
}

/// `NBD_REP_META_CONTEXT`: a context's id and name.
pub fn meta_context_reply(option: u32, id: u32, name: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + name.len());
    d.extend_from_slice(&id.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    option_reply(option, REP_META_CONTEXT, &d)
}

/// Encodes a request header (for tests and the protocol fuzzer, which
/// play the client).
pub fn encode_request(r: &Request) -> [u8; REQUEST_HEADER] {
    let mut b = [0u8; REQUEST_HEADER];
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.kind.to_be_bytes());
    b[8..16].copy_from_slice(&r.handle.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..].copy_from_slice(&r.len.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_a_bad_magic_is_refused() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            handle: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            len: 4096,
        };
        let mut b = encode_request(&r);
        assert_eq!(request(&b), Ok(r));
        b[0] ^= 1;
        assert!(request(&b).is_err());
    }

    #[test]
    fn go_data_must_add_up() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            go_request(&d),
            Ok(GoRequest {
                name: "vol".into(),
                infos: vec![INFO_BLOCK_SIZE]
            })
        );
        assert!(go_request(&d[..d.len() - 1]).is_err());
        let mut long = d.clone();
        long[3] = 200;
        assert!(go_request(&long).is_err());
        assert!(go_request(&[]).is_err());
        let mut not_utf8 = d;
        not_utf8[4] = 0xff;
        assert!(go_request(&not_utf8).is_err());
    }

    #[test]
    fn meta_context_data_must_add_up() {
        let mut d = Vec::new();
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(b"v");
        d.extend_from_slice(&2u32.to_be_bytes());
        for q in ["base:allocation", "x-other:"] {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        let r = meta_request(&d).unwrap();
        assert_eq!(r.name, "v");
        assert_eq!(r.queries, vec!["base:allocation", "x-other:"]);
        assert!(meta_request(&d[..d.len() - 1]).is_err());
        let mut more = d.clone();
        more.push(0);
        assert!(meta_request(&more).is_err());
        let mut many = d;
        many[8] = 0xff;
        assert!(meta_request(&many).is_err());
    }

    #[test]
    fn unknown_client_flags_end_the_session() {
        assert_eq!(client_flags(FLAG_C_FIXED_NEWSTYLE), Ok(false));
        assert_eq!(client_flags(3), Ok(true));
        assert!(client_flags(4).is_err());
    }
}
