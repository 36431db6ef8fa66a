edgeseg train --arch unet --data ../shared/data/camvid --out runs/camvid-cpu/teacher.pt --input-size 180x240 --device cpu --no-tensorboard --epochs 10 --optimizer adamw --lr 0.001 --batch-size 8 --seed 0
edgeseg distill runs/camvid-cpu/teacher.pt --data ../shared/data/camvid --out runs/camvid-cpu/student.pt --input-size 180x240 --device cpu --no-tensorboard --student mobilenetv3 --loss cwd --temperature 4.0 --loss-weight cwd=3.0 --optimizer adamw --lr 0.001 --batch-size 8 --seed 0 --epochs 10
edgeseg prune runs/camvid-cpu/student.pt --out runs/camvid-cpu/pruned.pt --data ../shared/data/camvid --ratio 0.3 --importance taylor --round-to 8 --finetune-epochs 30 --lr 0.0005 --batch-size 8 --seed 0
edgeseg export runs/camvid-cpu/teacher.pt --out runs/camvid-cpu/teacher.onnx --data ../shared/data/camvid
edgeseg export runs/camvid-cpu/pruned.pt --out runs/camvid-cpu/pruned.onnx --data ../shared/data/camvid
edgeseg calibrate runs/camvid-cpu/pruned.onnx --images ../shared/data/camvid/train/images --data ../shared/data/camvid --num 200 --max-miou-drop 0.5 --seed 0
edgeseg build-engine runs/camvid-cpu/pruned.int8.onnx --int8
edgeseg report runs/camvid-cpu --out runs/camvid-cpu --device cpu --rounds 10 --iters 10 --masks 4
