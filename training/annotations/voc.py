"""Pascal VOC XML reader (LabelImg and VoTT exports; the BCCD and pinochle datasets).

One ``<annotation>`` file per image::

    <annotation><filename>x.jpg</filename><size><width>640</width><height>480</height></size>
      <object><name>RBC</name><difficult>0</difficult>
        <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>...

Boxes are kept as written (VOC's 1-based inclusive pixel indices read as XYXY_ABS, see
:mod:`training.annotations.record`). The image is looked up by ``<filename>`` in the ``images``
folders (option), then the XML's own folder, then the VOC ``JPEGImages/`` sibling of that folder;
``<path>`` is never used (it holds the labeler's machine path: ``/home/pi/...``, ``C:\\...``).

Files are parsed with ``defusedxml``: an XML file declaring entities or referencing external
resources (an "XML bomb", XXE) is rejected, never expanded; so is a file in an encoding expat does not
read (UTF-8, UTF-16, ISO-8859-1 and one-byte code pages are read; Shift JIS, Big5... are not).
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

from training.annotations._common import ReadContext, find_files, parse_number, parse_size
from training.annotations.record import Box, ImageRecord


def read_voc(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], None]:
    """Read every ``*.xml`` under ``inputs`` (folders, recursively, or files).

    Unparseable files and objects become :class:`~training.annotations.record.Issue` entries in
    ``ctx.rejected`` (file, ``object[i]`` 1-based, reason); the rest of the file is kept.
    """
    records: list[ImageRecord] = []
    for xml in find_files(inputs, (".xml",), "Pascal VOC XML"):
        src = ctx.rel(xml)
        try:
            tree = parse_xml(xml)
        except ParseError as exc:
            ctx.reject(xml, f"line {exc.position[0]}", f"invalid XML: {exc}")
            continue
        except DefusedXmlException as exc:  # entity declarations, external references: XML bombs, XXE
            ctx.reject(xml, "", f"unsafe XML refused ({type(exc).__name__}): {exc}")
            continue
        except OSError as exc:
            ctx.reject(xml, "", f"cannot read file: {exc.strerror or exc}")
            continue
        except (ValueError, LookupError) as exc:  # an encoding expat cannot read (multi-byte, unknown name)
            ctx.reject(xml, "", f"unreadable XML encoding: {exc}")
            continue
        ann = tree.getroot()
        if ann.tag != "annotation":
            ctx.reject(xml, "", f"not a Pascal VOC annotation (root element <{ann.tag}>, expected <annotation>)")
            continue
        jpeg_images = xml.parent.parent / "JPEGImages"
        locator = ctx.locator([*images, xml.parent, jpeg_images])
        # where a missing image is reported: the images option, else VOC's JPEGImages/, else the XML's folder
        lookup = images[0] if images else (jpeg_images if jpeg_images.is_dir() else xml.parent)
        filename = (ann.findtext("filename") or "").strip()
        if filename:
            found = locator.find(filename)
            name = ctx.image_name(found, filename, lookup)
        else:
            found = locator.find_stem(xml.stem)
            name = ctx.image_name(found, xml.stem + ".jpg", lookup)
            if found is None:
                ctx.warn(xml, "filename", "no <filename>; looked for an image named like the XML file")
        try:
            width = parse_size(ann.findtext("size/width"))
            height = parse_size(ann.findtext("size/height"))
        except ValueError as exc:
            ctx.warn(xml, "size", f"{exc}; the size is read from the image instead")
            width = height = None
        rec = ImageRecord(image=name, width=width, height=height, source=src)
        for i, obj in enumerate(ann.findall("object"), start=1):
            label = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            try:
                if bb is None:
                    raise ValueError("no <bndbox>")
                coords = [parse_number(bb.findtext(k), f"<{k}>") for k in ("xmin", "ymin", "xmax", "ymax")]
                if not label and ctx.label_pattern is None:
                    raise ValueError("no <name> (class)")
            except ValueError as exc:
                ctx.reject(xml, f"object[{i}]", str(exc))
                continue
            difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
            rec.boxes.append(Box(coords[0], coords[1], coords[2], coords[3], label=label, source=f"{src}#object[{i}]", difficult=difficult))
        records.append(rec)
    return records, None
