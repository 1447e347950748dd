//! The walk of a data set, from the cursor to the end of the data: undefined-length
//! sequences and items are descended into, defined-length ones walked inline, encapsulated
//! pixel fragments skipped, and whatever follows the top-level pixel data that is no real
//! element marked as trailing junk. Every value length is checked against the bytes left,
//! and the nesting and parsing cost against [`super::limits`].

use std::io::{Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::cursor::{long_length, u16_of, u32_of, Cursor};
use super::limits::{too_deep, Budget, ITEM_COST, NESTED_ELEMENT_COST};
use super::{Scan, Stop, Syntax, PIXEL_DATA, UNDEFINED};

/// Walk a data set from the cursor to the end.
pub(super) fn walk_dataset<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    syntax: Syntax,
    stop_at_pixel_data: bool,
    budget: u64,
    scan: &mut Scan,
) -> Result<(), Stop> {
    let mut w = Walk::new(syntax, budget);
    loop {
        w.close_ended(c.pos);
        let top = w.at_top();
        if c.remaining() < 8 {
            return w.data_ended(c, stop_at_pixel_data, scan);
        }
        let start = c.pos;
        let g = u16_of(c.bytes()?, w.be);
        let e = u16_of(c.bytes()?, w.be);
        let tag = Tag(g, e);
        if w.after_pixels && w.is_trailing(c, tag, start)? {
            scan.trailing_at = Some(start);
            return Ok(());
        }
        if g == 0xFFFE {
            w.item_or_delimiter(c, tag, top)?;
            continue;
        }
        if !top {
            w.budget.spend(NESTED_ELEMENT_COST)?;
        }
        if top && tag == PIXEL_DATA {
            scan.pixel_data_at = Some(start);
            if stop_at_pixel_data {
                return Ok(());
            }
        }
        let header = w.element_header(c, tag, start)?;
        w.element(c, &header, top)?;
    }
}

/// An element header (not an item or delimiter) the walk has read.
struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
    /// Where its tag starts.
    start: u64,
}

/// Where the walk of a data set is: the structures it is inside and what parsing them costs.
struct Walk {
    syntax: Syntax,
    be: bool,
    /// What parsing the nested structure walked so far would allocate (estimate).
    budget: Budget,
    /// Set once the top-level PixelData value has ended: what follows must be a valid element
    /// with a higher tag, or it is trailing junk.
    after_pixels: bool,
    /// Depth of undefined-length encapsulated pixel data (its items hold fragments, not data
    /// sets, so their values are skipped rather than walked).
    in_fragments: bool,
    depth: u32,
    /// Ends of the defined-length sequences and items we are inside (their content is walked
    /// inline), each marked whether it is a sequence: an element is top-level only when this
    /// is empty and `depth` is 0.
    open_ends: Vec<(u64, bool)>,
    /// Defined-length sequences among `open_ends`: with `depth`, the nesting of sequences.
    defined_sequences: usize,
}

impl Walk {
    fn new(syntax: Syntax, budget: u64) -> Self {
        Walk {
            syntax,
            be: syntax == Syntax::ExplicitBe,
            budget: Budget::new(budget),
            after_pixels: false,
            in_fragments: false,
            depth: 0,
            open_ends: Vec::new(),
            defined_sequences: 0,
        }
    }

    /// Leave the defined-length sequences and items that end at or before `pos`.
    fn close_ended(&mut self, pos: u64) {
        while let Some(&(end, sequence)) = self.open_ends.last() {
            if end > pos {
                break;
            }
            self.open_ends.pop();
            self.defined_sequences -= usize::from(sequence);
        }
    }

    /// Whether the next element is a top-level one.
    fn at_top(&self) -> bool {
        self.depth == 0 && self.open_ends.is_empty()
    }

    /// Nesting of sequences, undefined and defined length.
    fn nesting(&self) -> usize {
        self.depth as usize + self.defined_sequences
    }

    /// The data ends (less than an element header left): done, unless it ends inside
    /// encapsulated pixel data that a full read needs whole.
    fn data_ended<R: Read + Seek>(
        &self,
        c: &Cursor<'_, R>,
        stop_at_pixel_data: bool,
        scan: &mut Scan,
    ) -> Result<(), Stop> {
        if self.in_fragments && !stop_at_pixel_data {
            return Err(Stop::Cut(
                "encapsulated pixel data ends without its sequence delimiter".into(),
            ));
        }
        if self.after_pixels && c.remaining() > 0 {
            scan.trailing_at = Some(c.pos);
        }
        Ok(())
    }

    /// After the pixel data: whether the element whose tag was just read at `start` is
    /// trailing junk. A real element is walked on, from right after its tag.
    fn is_trailing<R: Read + Seek>(
        &mut self,
        c: &mut Cursor<'_, R>,
        tag: Tag,
        start: u64,
    ) -> Result<bool, Stop> {
        match element_fits(c, tag, self.syntax) {
            Ok(true) => {}
            Ok(false) | Err(Stop::Reject(_)) => return Ok(true),
            Err(stop) => return Err(stop),
        }
        c.src.seek(SeekFrom::Start(start + 4))?;
        c.pos = start + 4;
        self.after_pixels = false;
        Ok(false)
    }

    /// An item or a delimiter (tag already read): items of a data set are counted and, with a
    /// defined length, walked inline; fragments are skipped.
    fn item_or_delimiter<R: Read + Seek>(
        &mut self,
        c: &mut Cursor<'_, R>,
        tag: Tag,
        top: bool,
    ) -> Result<(), Stop> {
        let len = u32_of(c.bytes()?, self.be);
        let e = tag.element();
        if e == 0xE000 && !self.in_fragments {
            self.budget.spend(ITEM_COST)?;
        }
        match e {
            0xE000 if self.in_fragments && len != UNDEFINED => c.skip(tag, len)?,
            0xE000 if len == UNDEFINED => {}
            0xE000 => {
                c.fits(tag, len)?;
                self.open_ends.push((c.pos + u64::from(len), false));
            }
            0xE0DD => {
                if self.in_fragments {
                    self.in_fragments = false;
                    self.after_pixels = top;
                } else {
                    self.depth = self.depth.saturating_sub(1);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The rest of an element's header (tag already read at `start`): its VR and length.
    fn element_header<R: Read + Seek>(
        &self,
        c: &mut Cursor<'_, R>,
        tag: Tag,
        start: u64,
    ) -> Result<Header, Stop> {
        let (vr, len) = match self.syntax {
            Syntax::ImplicitLe => {
                let len = u32_of(c.bytes()?, false);
                let vr = match StandardDataDictionary.by_tag(tag).map(|entry| entry.vr()) {
                    Some(VirtualVr::Exact(vr)) => vr,
                    _ => VR::UN,
                };
                (vr, len)
            }
            Syntax::ExplicitLe | Syntax::ExplicitBe | Syntax::Deflated => {
                // dicom-rs reads an unknown VR as UN (reserved bytes + 4-byte length).
                let vr = VR::from_binary(c.bytes::<2>()?).unwrap_or(VR::UN);
                let len = if long_length(vr) {
                    c.bytes::<2>()?;
                    u32_of(c.bytes()?, self.be)
                } else {
                    u32::from(u16_of(c.bytes()?, self.be))
                };
                (vr, len)
            }
        };
        Ok(Header {
            tag,
            vr,
            len,
            start,
        })
    }

    /// An element's value: a sequence is entered (its items follow), encapsulated pixel
    /// data's fragments are walked next, any other value is skipped.
    fn element<R: Read + Seek>(
        &mut self,
        c: &mut Cursor<'_, R>,
        h: &Header,
        top: bool,
    ) -> Result<(), Stop> {
        if h.len == UNDEFINED {
            if h.tag == PIXEL_DATA {
                self.in_fragments = true;
            } else {
                // A sequence (SQ, or UN read as implicit-VR sequence): walk its items.
                self.depth += 1;
                too_deep(self.nesting(), h.start)?;
            }
            return Ok(());
        }
        if h.vr == VR::SQ {
            // Defined-length sequence: its items follow inline.
            c.fits(h.tag, h.len)?;
            self.open_ends.push((c.pos + u64::from(h.len), true));
            self.defined_sequences += 1;
            too_deep(self.nesting(), h.start)?;
            return Ok(());
        }
        c.skip(h.tag, h.len)?;
        self.after_pixels = top && h.tag == PIXEL_DATA;
        Ok(())
    }
}

/// After the pixel data: does the element at the cursor (tag already read) look like a real
/// one — a tag above PixelData and a value that fits? Reads its header; the caller rewinds.
fn element_fits<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    tag: Tag,
    syntax: Syntax,
) -> Result<bool, Stop> {
    if tag <= PIXEL_DATA {
        return Ok(false);
    }
    let be = syntax == Syntax::ExplicitBe;
    let len = match syntax {
        Syntax::ImplicitLe => u32_of(c.bytes()?, false),
        Syntax::ExplicitLe | Syntax::ExplicitBe | Syntax::Deflated => {
            let Some(vr) = VR::from_binary(c.bytes::<2>()?) else {
                return Ok(false);
            };
            if long_length(vr) {
                c.bytes::<2>()?;
                u32_of(c.bytes()?, be)
            } else {
                u32::from(u16_of(c.bytes()?, be))
            }
        }
    };
    Ok(len == UNDEFINED || c.fits(tag, len).is_ok())
}
