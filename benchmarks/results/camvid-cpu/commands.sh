# benchmarks/camvid/run.py --profile cpu, as run on 2026-11-30 (every edgeseg command, in order).
# First invocation: your model, then a first try at compression (40% pruned, 60 KD epochs):
# -1.49 mIoU and 1.86x, both targets missed (report-first-try.md).
edgeseg train --arch lraspp-mobilenetv3-large --data ../shared/data/camvid --out runs/camvid-cpu/user.pt --input-size 180x240 --device cpu --no-tensorboard --epochs 80 --optimizer adamw --batch-size 8 --seed 0
edgeseg prune runs/camvid-cpu/user.pt --out runs/camvid-cpu/pruned.pt --data ../shared/data/camvid --ratio 0.4 --importance taylor --round-to 8 --finetune-epochs 60 --lr 0.0005 --batch-size 8 --seed 0
edgeseg export runs/camvid-cpu/user.pt --out runs/camvid-cpu/user.onnx --data ../shared/data/camvid
edgeseg export runs/camvid-cpu/pruned.pt --out runs/camvid-cpu/pruned.onnx --data ../shared/data/camvid
edgeseg calibrate runs/camvid-cpu/pruned.onnx --images ../shared/data/camvid/train/images --data ../shared/data/camvid --num 200 --seed 0
edgeseg build-engine runs/camvid-cpu/pruned.int8.onnx --int8
edgeseg report runs/camvid-cpu --out runs/camvid-cpu --device cpu --rounds 10 --iters 10 --masks 4
# Second invocation, after the profile changed to 50% pruned with 120 KD epochs: the first try's
# pruned files were deleted; user.pt and user.onnx were kept (report.md).
edgeseg prune runs/camvid-cpu/user.pt --out runs/camvid-cpu/pruned.pt --data ../shared/data/camvid --ratio 0.5 --importance taylor --round-to 8 --finetune-epochs 120 --lr 0.0005 --batch-size 8 --seed 0
edgeseg export runs/camvid-cpu/pruned.pt --out runs/camvid-cpu/pruned.onnx --data ../shared/data/camvid
edgeseg calibrate runs/camvid-cpu/pruned.onnx --images ../shared/data/camvid/train/images --data ../shared/data/camvid --num 200 --seed 0
edgeseg build-engine runs/camvid-cpu/pruned.int8.onnx --int8
edgeseg report runs/camvid-cpu --out runs/camvid-cpu --device cpu --rounds 10 --iters 10 --masks 4
