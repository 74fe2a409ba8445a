"""The paper's representation analyses and the field's standard measures (DESIGN.md section 7),
on frozen pretrained encoders: features (``features``), nearest-neighbour retrieval
(``retrieval``), a linear probe (``probe``), class consistency (``consistency``), the
figures (``figures``) and one HTML report (``report``)."""
