"""Evaluation of predicted tumor masks against COCO ground truth whose "masks" are boxes.

The dataset's COCO segmentations are loose axis-aligned boxes (about 1.8x the area of the
tumor's own bounding box), so pixel Dice against them rewards box-shaped predictions and
punishes a faithful tumor outline. The evaluation therefore reports several views side by side:

* pixel overlap with the rasterized COCO masks (:func:`~.pixel.dice_iou`, MONAI's metric functions);
* box metrics on the connected components of a prediction: box IoU, greedy one-to-one
  detection at IoU >= 0.5 (:func:`~.detection.detection_counts`);
* box-agnostic detection: a component counts when most of its pixels lie inside a COCO box
  (:func:`~.detection.containment_counts`), with how much of each box is filled and how much
  of the prediction lies outside every box;
* Dice against true tumor outlines (PNG 0/255) where they exist (:func:`~.pixel.outline_dice`);
* COCO AP for boxes and masks with pycocotools (:func:`~.coco_ap.coco_ap`).

One file per job: :mod:`.pixel`, :mod:`.detection`, :mod:`.coco_ap`, :mod:`.evaluation` (a row
per image, the split's summary, their files) and :mod:`.tumor_evaluation` (the ignite metric
and handler ``evaluate.json`` attaches). Import from those modules: this package imports
nothing itself, so using one of them does not load pycocotools or ignite.
"""
