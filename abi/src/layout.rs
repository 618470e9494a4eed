//! Machine-readable layout descriptors of the wire structures.
//!
//! Every wire structure of [`crate::wire`] implements [`WireLayout`]. Its field list is produced
//! by the same macro invocation that declares the structure, with offsets taken by
//! `core::mem::offset_of!`, so it cannot disagree with the real layout. The specification's
//! layout tables and the C header are generated from these descriptors.

/// The primitive type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// One byte.
    U8,
    /// Little-endian 16-bit unsigned integer.
    U16,
    /// Little-endian 32-bit unsigned integer.
    U32,
    /// Little-endian 64-bit unsigned integer.
    U64,
    /// A byte array of the given length.
    Bytes(usize),
    /// A nested wire structure, by name.
    Struct(&'static str),
}

impl FieldType {
    /// The C type name used in the generated header (`uint8_t` for byte arrays, the struct's
    /// C name for nested structures).
    pub const fn c_name(self) -> &'static str {
        match self {
            FieldType::U8 | FieldType::Bytes(_) => "uint8_t",
            FieldType::U16 => "uint16_t",
            FieldType::U32 => "uint32_t",
            FieldType::U64 => "uint64_t",
            FieldType::Struct(n) => n,
        }
    }

    /// The short name used in the specification's tables.
    pub const fn spec_name(self) -> &'static str {
        match self {
            FieldType::U8 => "u8",
            FieldType::U16 => "le16",
            FieldType::U32 => "le32",
            FieldType::U64 => "le64",
            FieldType::Bytes(_) => "bytes",
            FieldType::Struct(n) => n,
        }
    }
}

/// One field of a wire structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Field name (as in Rust and in the C header).
    pub name: &'static str,
    /// Byte offset from the start of the structure.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Primitive type.
    pub ty: FieldType,
    /// One-line description.
    pub doc: &'static str,
}

impl Field {
    /// Whether the field is reserved (must be zero when sent, checked when received).
    pub fn is_reserved(&self) -> bool {
        self.name.starts_with("reserved")
    }
}

/// A type whose values go on the wire as a field.
pub trait WireType {
    /// How the field is described.
    const KIND: FieldType;
}

impl WireType for u8 {
    const KIND: FieldType = FieldType::U8;
}
impl WireType for zerocopy::little_endian::U16 {
    const KIND: FieldType = FieldType::U16;
}
impl WireType for zerocopy::little_endian::U32 {
    const KIND: FieldType = FieldType::U32;
}
impl WireType for zerocopy::little_endian::U64 {
    const KIND: FieldType = FieldType::U64;
}
impl<const N: usize> WireType for [u8; N] {
    const KIND: FieldType = FieldType::Bytes(N);
}

/// A wire structure with a machine-readable layout.
pub trait WireLayout: Sized {
    /// Rust (and C, with the `vir_` prefix in snake case) name.
    const NAME: &'static str;
    /// The C struct name in the generated header.
    const C_NAME: &'static str;
    /// Description of the structure.
    const DOC: &'static str;
    /// Fields in offset order.
    const FIELDS: &'static [Field];
    /// Size in bytes.
    const SIZE: usize = core::mem::size_of::<Self>();
}

/// A descriptor of a wire structure usable without naming its type.
#[derive(Debug, Clone, Copy)]
pub struct StructDesc {
    /// See [`WireLayout::NAME`].
    pub name: &'static str,
    /// See [`WireLayout::C_NAME`].
    pub c_name: &'static str,
    /// See [`WireLayout::DOC`].
    pub doc: &'static str,
    /// See [`WireLayout::FIELDS`].
    pub fields: &'static [Field],
    /// See [`WireLayout::SIZE`].
    pub size: usize,
}

impl StructDesc {
    /// The descriptor of `T`.
    pub const fn of<T: WireLayout>() -> StructDesc {
        StructDesc {
            name: T::NAME,
            c_name: T::C_NAME,
            doc: T::DOC,
            fields: T::FIELDS,
            size: T::SIZE,
        }
    }
}

/// Declare a wire structure together with its [`WireLayout`].
macro_rules! wire_struct {
    (
        $(#[doc = $doc:literal])*
        $name:ident as $cname:literal {
            $( $(#[doc = $fdoc:literal])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout,
            zerocopy::Immutable, zerocopy::Unaligned,
        )]
        #[repr(C)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }

        impl $crate::layout::WireLayout for $name {
            const NAME: &'static str = stringify!($name);
            const C_NAME: &'static str = $cname;
            const DOC: &'static str = concat!($($doc, "\n"),*);
            const FIELDS: &'static [$crate::layout::Field] = &[
                $( $crate::layout::Field {
                    name: stringify!($field),
                    offset: core::mem::offset_of!($name, $field),
                    size: core::mem::size_of::<$ty>(),
                    ty: <$ty as $crate::layout::WireType>::KIND,
                    doc: concat!($($fdoc),*),
                }, )*
            ];
        }

        impl $crate::layout::WireType for $name {
            const KIND: $crate::layout::FieldType = $crate::layout::FieldType::Struct($cname);
        }

        impl Default for $name {
            fn default() -> Self {
                <Self as zerocopy::FromZeros>::new_zeroed()
            }
        }

        #[cfg(feature = "arbitrary")]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                let bytes = u.bytes(core::mem::size_of::<Self>())?;
                <Self as zerocopy::FromBytes>::read_from_bytes(bytes)
                    .map_err(|_| arbitrary::Error::NotEnoughData)
            }
        }
    };
}
pub(crate) use wire_struct;
